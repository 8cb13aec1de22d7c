"""Static files under ``/pub/vN/``: the files of ``StaticDirectory`` (docs/static.md).

``StaticFiles.serve`` answers one GET or HEAD synchronously: a whole
response as ``bytes`` (errors, 304, HEAD, small files, ranges of small files)
or a ``FileStream`` that writes a large file in chunks under flow control.

The parts: ``paths`` (decoding and refusing request paths), ``validators``
(ETag, dates, conditionals, Range: pure functions, tested without a server),
``types`` (Content-Type), ``cache`` (the in-memory LRU), ``filestream``
(large files under flow control); this module puts them together.

Every refusal (traversal, hidden file, unreadable, missing, not a regular
file) answers the same 404, so the answer never tells what exists outside
the served tree or why a path was refused.
"""
import os
import stat
import time

from engine.http import responses
from engine.static.cache import Cached, FileCache
from engine.static.filestream import CHUNK, FileStream
from engine.static.paths import Found, inside, resolve, split_path
from engine.static.types import ContentTypes
from engine.static.validators import (UNSATISFIABLE, http_date, if_range_holds, make_etag, parse_http_date,
                         parse_range, precondition, signature, strong_match, weak_match)

NOT_FOUND_BODY = b"not found\n"
# Bytes a relative Location may carry as they came (the path is still encoded).
LOCATION_SAFE = frozenset(range(33, 127))

__all__ = ["CHUNK", "UNSATISFIABLE", "Cached", "ContentTypes", "FileCache", "FileStream",
           "Found", "StaticFiles", "http_date", "if_range_holds", "inside", "make_etag",
           "parse_http_date", "parse_range", "precondition", "resolve", "signature",
           "split_path", "strong_match", "weak_match"]


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
