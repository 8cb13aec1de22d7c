"""Static files under ``/pub/vN/``: the files of ``StaticDirectory`` (docs/static.md).

``StaticFiles.serve`` answers one GET or HEAD synchronously: a whole
response as ``bytes`` (errors, 304, HEAD, small files, ranges of small files)
or a ``FileStream`` that writes a large file in chunks under flow control.

The pure parts (path resolution, Range parsing, conditional requests) are
module-level functions so they can be tested without a server.

Every refusal (traversal, hidden file, unreadable, missing, not a regular
file) answers the same 404, so the answer never tells what exists outside
the served tree or why a path was refused.
"""
import calendar
import mimetypes
import os
import stat
import time
from collections import OrderedDict
from email.utils import formatdate, parsedate_tz

from .http import responses
from .http.stream import Stream

CHUNK = 256 << 10           # bytes per read of a streamed file
INDEX = b"index.html"
# Not in Python 3.11's built-in table, common on the web.
EXTRA_TYPES = {".woff": "font/woff", ".woff2": "font/woff2", ".avif": "image/avif",
               ".mjs": "text/javascript", ".webmanifest": "application/manifest+json"}
# A compressed file (x.tar.gz) is served as the archive it is, not with a
# Content-Encoding the browser would silently undo.
ENCODED_TYPES = {"gzip": "application/gzip", "bzip2": "application/x-bzip2",
                 "xz": "application/x-xz", "br": "application/x-brotli",
                 "compress": "application/x-compress"}
TEXTUAL = ("application/javascript", "application/json", "application/xml",
           "image/svg+xml", "application/manifest+json")
UNSATISFIABLE = "unsatisfiable"
NOT_FOUND_BODY = b"not found\n"
HEX = frozenset(b"0123456789abcdefABCDEF")
# Bytes a relative Location may carry as they came (the path is still encoded).
LOCATION_SAFE = frozenset(range(33, 127))


# ---- paths ----------------------------------------------------------------
def _unquote(segment):
    """Percent-decode one path segment (bytes); None when an escape is malformed."""
    if b"%" not in segment:
        return segment
    parts = segment.split(b"%")
    out = [parts[0]]
    for part in parts[1:]:
        code = part[:2]
        if len(code) < 2 or not all(c in HEX for c in code):
            return None
        out.append(bytes((int(code, 16),)))
        out.append(part[2:])
    return b"".join(out)


def split_path(rel):
    """The decoded segments of ``rel`` and whether it ended with "/"; None if refused.

    Refused: ".", "..", empty segments, hidden names (leading "."), and any
    segment that decodes to a separator, a backslash or NUL, so no spelling of
    a path can step out of the root or into a name the root did not mean.
    """
    if not rel:
        return [], True
    raw = rel.split(b"/")
    trailing = raw[-1] == b""
    if trailing:
        raw.pop()
    segments = []
    for piece in raw:
        name = _unquote(piece)
        if not name or name.startswith(b".") or b"/" in name or b"\\" in name or b"\0" in name:
            return None
        segments.append(name)
    return segments, trailing


def inside(root, real):
    """Whether the resolved path ``real`` is ``root`` or below it (both realpaths)."""
    return real == root or real.startswith(root + b"/")


class Found:
    """A resolved request path: ``real`` to open, ``lexical`` (the path as the
    request spelled it, symlinks unresolved) to re-check a cached copy."""
    __slots__ = ("real", "lexical", "directory")

    def __init__(self, real, lexical, directory=False):
        self.real = real
        self.lexical = lexical
        self.directory = directory      # a directory named without its "/"


def resolve(root, rel):
    """The regular file ``rel`` names under ``root`` (the root's realpath,
    bytes) as a Found, or None when refused or absent.

    Symlinks inside the tree are followed only while their target stays
    under the root; a directory resolves to its index.html.
    """
    split = split_path(rel)
    if split is None:
        return None
    segments, trailing = split
    lexical = os.path.join(root, *segments) if segments else root
    real = os.path.realpath(lexical)
    if not inside(root, real):
        return None
    try:
        st = os.stat(real)
        if stat.S_ISDIR(st.st_mode):
            if segments and not trailing:
                return Found(real, lexical, directory=True)
            lexical = os.path.join(lexical, INDEX)
            real = os.path.realpath(lexical)
            if not inside(root, real):
                return None
            st = os.stat(real)
        elif trailing and segments:
            return None                 # "file.txt/": a file is not a directory
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return Found(real, lexical)


# ---- validators -------------------------------------------------------------
def signature(st):
    """What identifies one version of a file: a change to it changes one of these."""
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)


def make_etag(st):
    # Strong: size, mtime and inode change with any write or replacement.
    return b'"%x-%x-%x"' % (st.st_size, st.st_mtime_ns, st.st_ino)


def http_date(seconds):
    return formatdate(seconds, usegmt=True).encode()


def parse_http_date(value):
    """Seconds since the epoch of an HTTP date (any of the three RFC 9110
    forms), or None when it is not a date."""
    try:
        parts = parsedate_tz(value.decode("latin-1"))
    except (UnicodeDecodeError, ValueError, TypeError, IndexError):
        return None
    if parts is None:
        return None
    try:
        return calendar.timegm(parts[:9]) - (parts[9] or 0)
    except (ValueError, OverflowError):
        return None


def _etags(value):
    """The entity tags of an If-(None-)Match list, quoted, "W/" kept."""
    return [tag.strip() for tag in value.split(b",") if tag.strip()]


def _opaque(tag):
    return tag[2:] if tag.startswith(b"W/") else tag


def weak_match(value, etag):
    """If-None-Match comparison: "*" or any tag equal to ours ignoring W/."""
    if value.strip() == b"*":
        return True
    return any(_opaque(tag) == etag for tag in _etags(value))


def strong_match(value, etag):
    """If-Match comparison: "*" or a strong tag equal to ours."""
    if value.strip() == b"*":
        return True
    return any(tag == etag for tag in _etags(value))


def precondition(headers, etag, mtime, last_modified):
    """304, 412 or None (serve), in RFC 9110 §13.2.2 order, for GET/HEAD."""
    if_match = headers.get(b"if-match")
    if if_match is not None:
        if not strong_match(if_match, etag):
            return 412
    else:
        since = headers.get(b"if-unmodified-since")
        when = None if since is None else parse_http_date(since)
        if when is not None and mtime > when:
            return 412
    if_none = headers.get(b"if-none-match")
    if if_none is not None:                 # wins over If-Modified-Since
        return 304 if weak_match(if_none, etag) else None
    since = headers.get(b"if-modified-since")
    if since is None:
        return None
    if since == last_modified:              # the browser echoes our own header
        return 304
    when = parse_http_date(since)
    return 304 if when is not None and mtime <= when else None


def if_range_holds(value, etag, last_modified):
    """Whether a Range may be honoured: If-Range absent, or naming this exact
    version (a strong tag, or our Last-Modified date verbatim)."""
    if value is None:
        return True
    value = value.strip()
    if value.startswith(b'"') or value.startswith(b"W/"):
        return value == etag                # weak tags never match If-Range
    return value == last_modified


def parse_range(value, size):
    """One byte range of a file of ``size`` bytes: (first, last) inclusive,
    UNSATISFIABLE, or None to ignore the header and send the whole file
    (another unit, bad syntax, or several ranges)."""
    unit, sep, spec = value.partition(b"=")
    if not sep or unit.strip().lower() != b"bytes" or b"," in spec:
        return None
    first, sep, last = spec.strip().partition(b"-")
    if not sep or not (first.isdigit() or last.isdigit()):
        return None
    if (first and not first.isdigit()) or (last and not last.isdigit()):
        return None
    try:
        if not first:                       # suffix: the last N bytes
            count = int(last)
            if count == 0 or size == 0:
                return UNSATISFIABLE
            return max(0, size - count), size - 1
        start = int(first)
        end = int(last) if last else None
    except ValueError:                      # absurdly long digit strings
        return None
    if end is not None and end < start:
        return None
    if start >= size:
        return UNSATISFIABLE
    return start, size - 1 if end is None else min(end, size - 1)


# ---- content types ----------------------------------------------------------
class ContentTypes:
    """Content-Type by file extension from Python's built-in table (not
    /etc/mime.types, so every machine answers the same), memoised."""

    def __init__(self):
        self.table = mimetypes.MimeTypes(filenames=())
        self.memo = {}

    def __call__(self, path):
        name = os.path.basename(path).decode("utf-8", "replace").lower()
        dot = name.rfind(".")
        ext = name[dot:] if dot > 0 else ""
        found = self.memo.get(ext) if ext.count(".") == 1 else None
        if found is None:
            found = self._guess(name, ext)
            if len(self.memo) < 1024:       # the memo cannot grow without end
                self.memo[ext] = found
        return found

    def _guess(self, name, ext):
        kind, encoding = self.table.guess_type(name, strict=False)
        if encoding:
            kind = ENCODED_TYPES.get(encoding, "application/octet-stream")
        kind = EXTRA_TYPES.get(ext) or kind or "application/octet-stream"
        if kind.startswith("text/") or kind in TEXTUAL:
            kind += "; charset=utf-8"
        return kind.encode()


# ---- the in-memory cache ----------------------------------------------------
class Cached:
    """One small file held in memory, with its validators pre-rendered."""
    __slots__ = ("path", "sig", "body", "etag", "mtime", "last_modified", "content_type")

    def __init__(self, path, sig, body, etag, mtime, last_modified, content_type):
        self.path = path
        self.sig = sig
        self.body = body
        self.etag = etag
        self.mtime = mtime
        self.last_modified = last_modified
        self.content_type = content_type


class FileCache:
    """LRU of small files keyed by the request path, bounded by total bytes."""

    def __init__(self, max_bytes, max_file_bytes):
        self.max_bytes = max_bytes
        self.max_file_bytes = min(max_file_bytes, max_bytes)
        self.entries = OrderedDict()
        self.size = 0

    def get(self, key):
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
        return entry

    def put(self, key, entry):
        if not self.max_bytes or len(entry.body) > self.max_file_bytes:
            return
        self.drop(key)
        self.entries[key] = entry
        self.size += len(entry.body)
        while self.size > self.max_bytes:
            _, old = self.entries.popitem(last=False)
            self.size -= len(old.body)

    def drop(self, key):
        old = self.entries.pop(key, None)
        if old is not None:
            self.size -= len(old.body)


# ---- streaming large files --------------------------------------------------
class FileStream(Stream):
    """A response head, then ``length`` bytes of ``fd`` from ``offset``.

    Read with ``os.pread`` in CHUNK pieces and written to the transport
    (uvloop 0.23 has no ``loop.sendfile``; see docs/static.md). Reading stops
    while the client's buffer is full and resumes when it drains, so memory
    stays at about one chunk plus the transport's high-water mark.
    """

    def __init__(self, fd):
        self.fd = fd            # owned: closed exactly once, by close()
        self.offset = 0
        self.remaining = 0
        self.head = b""
        self.keep = True
        self.conn = None
        self.paused = False

    def answer(self, head, offset, length, keep):
        """Make this the answer: ``head``, then the file's bytes [offset, offset+length)."""
        self.head = head
        self.offset = offset
        self.remaining = length
        self.keep = keep
        return self

    def start(self, conn):
        self.started = True
        self.conn = conn
        conn.transport.write(self.head)
        self.head = b""
        self._pump()

    # A client that stops reading is the connection's business: it aborts
    # after WriteTimeoutSeconds paused, which ends this stream through close().
    def pause_output(self):
        self.paused = True

    def resume_output(self):
        self.paused = False
        if self.conn is not None:
            self._pump()

    def _pump(self):
        transport = self.conn.transport
        while self.remaining and not self.paused:
            if self.fd < 0 or transport.is_closing():
                return
            try:
                data = os.pread(self.fd, min(CHUNK, self.remaining), self.offset)
            except OSError:
                data = b""
            if not data:
                # The file shrank (or failed) under us: the promised length
                # cannot be sent, so the client must see a cut connection.
                self._abort()
                return
            self.offset += len(data)
            self.remaining -= len(data)
            transport.write(data)       # may call pause_output before returning
        if not self.remaining and self.fd >= 0:
            self.close()
            self.conn.stream_finished(self, self.keep)

    def _abort(self):
        self.close()
        if self.conn is not None:
            self.conn.transport.abort()

    def close(self):
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


# ---- the route --------------------------------------------------------------
class StaticFiles:
    """The ``/pub/vN/`` handler of one worker."""

    def __init__(self, config, date):
        self.root = os.path.realpath(os.fsencode(config.static_directory))
        self.date = date
        self.cache_control = b"Cache-Control: %s\r\n" % config.static_cache_control.encode() \
            if config.static_cache_control else b""
        self.cache = FileCache(config.static_cache_bytes, config.static_cache_file_bytes)
        self.inline_bytes = max(config.static_cache_file_bytes, 64 << 10)
        self.content_type = ContentTypes()

    def serve(self, req, rel, keep, tls):
        """(status, bytes or FileStream) for a GET or HEAD of ``rel``.
        ``tls`` needs nothing different: streams write through the transport."""
        head_only = req.method == b"HEAD"
        entry = self._cached(rel)
        if entry is not None:
            return self._answer(req, entry, entry.body, None, keep, head_only)
        found = resolve(self.root, rel)
        if found is None:
            return self._not_found(keep)
        if found.directory:
            return self._to_directory(rel, keep)
        try:
            fd = os.open(found.real, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            return self._not_found(keep)
        # The descriptor lives in a FileStream from here on, so whatever
        # happens it is closed once: here, or by the stream if it is the answer.
        opened = FileStream(fd)
        try:
            status, answer = self._serve_open(req, rel, found, opened, keep, head_only)
        except BaseException:
            opened.close()
            raise
        if answer is not opened:
            opened.close()
        return status, answer

    def _cached(self, rel):
        """The cache entry for ``rel`` if the file on disk is still that version.

        One stat of the path as the request spelled it (symlinks followed):
        a file rewritten, replaced or re-pointed elsewhere has another
        signature, so it is dropped and resolved again from scratch.
        """
        entry = self.cache.get(rel)
        if entry is None:
            return None
        try:
            sig = signature(os.stat(entry.path))
        except OSError:
            sig = None
        if sig != entry.sig:
            self.cache.drop(rel)
            return None
        return entry

    def _serve_open(self, req, rel, found, opened, keep, head_only):
        """Serve an open file: streamed if large, else read whole (and cached)."""
        st = os.fstat(opened.fd)
        if not stat.S_ISREG(st.st_mode):
            return self._not_found(keep)
        mtime = int(st.st_mtime)
        entry = Cached(found.lexical, signature(st), b"", make_etag(st), mtime,
                       http_date(mtime), self.content_type(found.real))
        if st.st_size > self.inline_bytes:
            return self._answer(req, entry, None, opened, keep, head_only)
        body = os.pread(opened.fd, st.st_size + 1, 0)      # one byte more: did it grow?
        if len(body) != st.st_size or signature(os.fstat(opened.fd)) != entry.sig:
            # Written while we read it: no consistent version to send.
            return 503, responses.simple(503, self.date, "file is changing, retry\n",
                                         close=not keep, extra=b"Retry-After: 1\r\n")
        entry.body = body
        if self._settled(st):
            self.cache.put(rel, entry)
        return self._answer(req, entry, body, None, keep, head_only)

    @staticmethod
    def _settled(st):
        # A file written less than a second ago may be written again within
        # the same mtime tick at the same size, which its signature would not
        # show; it is served from disk, not cached, until it settles.
        return time.time_ns() - st.st_mtime_ns > 1_000_000_000

    def _answer(self, req, entry, body, opened, keep, head_only):
        """Conditionals, then Range, then the 200/206 answer: from ``body``,
        or streamed from ``opened`` (a FileStream not yet answering)."""
        headers = req.headers
        status = precondition(headers, entry.etag, entry.mtime, entry.last_modified)
        if status is not None:
            return status, self._bodiless(status, entry, keep)
        size = entry.sig[0]
        first, last, status = 0, size - 1, 200
        wanted = headers.get(b"range")
        if wanted is not None and not head_only and \
                if_range_holds(headers.get(b"if-range"), entry.etag, entry.last_modified):
            span = parse_range(wanted, size)
            if span is UNSATISFIABLE:
                return 416, self._unsatisfiable(size, keep)
            if span is not None:
                (first, last), status = span, 206
        length = last - first + 1
        head = self._head(status, entry, length, first, last, size, keep)
        if head_only:
            return status, head
        if opened is None:
            return status, head + body[first:last + 1]
        return status, opened.answer(head, first, length, keep)

    # ---- response heads -----------------------------------------------------
    def _validators(self, entry):
        return b"ETag: %s\r\nLast-Modified: %s\r\n%s" % (
            entry.etag, entry.last_modified, self.cache_control)

    def _head(self, status, entry, length, first, last, size, keep):
        ranged = b"Content-Range: bytes %d-%d/%d\r\n" % (first, last, size) if status == 206 else b""
        return b"%s%s%sContent-Type: %s\r\nContent-Length: %d\r\n%s%sAccept-Ranges: bytes\r\n" \
               b"X-Content-Type-Options: nosniff\r\n%s\r\n" % (
                   responses.STATUS_LINES[status], self.date.value, responses.SERVER,
                   entry.content_type, length, ranged, self._validators(entry),
                   b"" if keep else responses.CLOSE)

    def _bodiless(self, status, entry, keep):
        # A 304 carries the validators and no Content-Length (RFC 9110 §15.4.5).
        if status == 304:
            return b"%s%s%s%s%s\r\n" % (responses.STATUS_LINES[304], self.date.value,
                                        responses.SERVER, self._validators(entry),
                                        b"" if keep else responses.CLOSE)
        return responses.simple(412, self.date, "precondition failed\n", close=not keep)

    def _unsatisfiable(self, size, keep):
        return responses.simple(416, self.date, "range not satisfiable\n", close=not keep,
                                extra=b"Content-Range: bytes */%d\r\nAccept-Ranges: bytes\r\n" % size)

    def _not_found(self, keep):
        return 404, responses.simple(404, self.date, NOT_FOUND_BODY, close=not keep)

    def _to_directory(self, rel, keep):
        # Relative to /pub/vN/a/b, "b/" is /pub/vN/a/b/: links in its index work.
        last = rel.rsplit(b"/", 1)[-1]
        if not all(c in LOCATION_SAFE for c in last):
            return self._not_found(keep)
        return 301, responses.simple(301, self.date, "moved\n", close=not keep,
                                     extra=b"Location: " + last + b"/\r\n")
