"""ETag, Last-Modified, conditional requests and Range (RFC 9110), pure functions."""
import calendar
from email.utils import formatdate, parsedate_tz

UNSATISFIABLE = "unsatisfiable"


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
