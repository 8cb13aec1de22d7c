# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled request parser (the hot path). Same API and output as
engine.parse_ref, whose docstring states the rules; the equivalence tests
hold this module to it.

Byte-level work (path splitting, percent-decoding, UUID checks and
formatting, number scanning, FNV hashing, base 36) is done in C loops;
dict building and JSON (orjson) stay Python objects.
"""

from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.math cimport isfinite, floor
from libc.string cimport memcpy
from posix.time cimport clock_gettime, timespec, CLOCK_REALTIME
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from cpython.unicode cimport PyUnicode_DecodeUTF8, PyUnicode_DecodeASCII
from cpython.conversion cimport PyOS_string_to_double
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_AsDouble

import secrets

import orjson

from engine.errors import ParseError
from engine.zones import ZONES

__all__ = ["TimeUUIDGen", "parse_track"]

cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object o)
    void* PyUnicode_DATA(object o)

cdef object _loads = orjson.loads
cdef object _dumps = orjson.dumps
cdef object _JSONDecodeError = orjson.JSONDecodeError
cdef object _JSONEncodeError = orjson.JSONEncodeError
cdef dict _ZONES = ZONES

cdef const char* _HEX = b"0123456789abcdef"
cdef const char* _B36 = b"0123456789abcdefghijklmnopqrstuvwxyz"

cdef uint64_t _UUID_EPOCH_OFFSET = 0x01B21DD213814000ULL
cdef uint64_t _TS_MASK = (1ULL << 60) - 1


# --------------------------------------------------------------------------
# Time-based UUIDs

cdef inline void _put_hex(char* out, uint64_t value, int digits) noexcept:
    cdef int i
    for i in range(digits - 1, -1, -1):
        out[i] = _HEX[value & 0xF]
        value >>= 4


cdef class TimeUUIDGen:
    """Version 1 UUID strings; strictly increasing timestamps per generator."""

    cdef uint64_t _last
    cdef uint64_t _node
    cdef uint32_t _clock_seq

    def __init__(self, node=None, clock_seq=None):
        if node is None:
            node = secrets.randbits(48) | (1 << 40)   # multicast bit
        if clock_seq is None:
            clock_seq = secrets.randbits(14)
        if not 0 <= node < (1 << 48):
            raise ValueError("node must be a 48-bit unsigned integer")
        if not 0 <= clock_seq < (1 << 14):
            raise ValueError("clock_seq must be a 14-bit unsigned integer")
        self._node = node
        self._clock_seq = clock_seq
        self._last = 0

    @property
    def node(self):
        return self._node

    @property
    def clock_seq(self):
        return self._clock_seq

    def new(self):
        cdef timespec now
        cdef uint64_t ts
        cdef char out[36]
        clock_gettime(CLOCK_REALTIME, &now)
        ts = (<uint64_t>now.tv_sec * 10000000ULL + <uint64_t>now.tv_nsec // 100
              + _UUID_EPOCH_OFFSET)
        if ts <= self._last:
            ts = self._last + 1
        self._last = ts
        ts &= _TS_MASK
        _put_hex(out, ts & 0xFFFFFFFFULL, 8)
        out[8] = b'-'
        _put_hex(out + 9, (ts >> 32) & 0xFFFF, 4)
        out[13] = b'-'
        _put_hex(out + 14, ((ts >> 48) & 0x0FFF) | 0x1000, 4)
        out[18] = b'-'
        _put_hex(out + 19, ((self._clock_seq >> 8) & 0x3F) | 0x80, 2)
        _put_hex(out + 21, self._clock_seq & 0xFF, 2)
        out[23] = b'-'
        _put_hex(out + 24, self._node, 12)
        return PyUnicode_DecodeASCII(out, 36, NULL)


# --------------------------------------------------------------------------
# Key kinds

cdef enum:
    K_UNKNOWN = 0
    K_TEXT = 1
    K_VERSION = 2
    K_ID = 3
    K_DURATION = 4
    K_SCORE = 5
    K_COORD = 6
    K_FIRST = 7
    K_PARAMS = 8
    K_UTM = 9
    K_URL = 10

cdef dict _KIND = {
    "uid": K_TEXT, "app": K_TEXT, "last": K_TEXT, "ptype": K_TEXT,
    "auth": K_TEXT, "xid": K_TEXT, "split": K_TEXT, "ename": K_TEXT,
    "etyp": K_TEXT, "sink": K_TEXT, "targets": K_TEXT, "source": K_TEXT,
    "medium": K_TEXT, "campaign": K_TEXT, "term": K_TEXT, "ref": K_TEXT,
    "aff": K_TEXT, "device": K_TEXT, "os": K_TEXT, "tz": K_TEXT,
    "outcome": K_TEXT, "username": K_TEXT,
    "url": K_URL,
    "version": K_VERSION,
    "vid": K_ID, "sid": K_ID,
    "duration": K_DURATION,
    "score": K_SCORE,
    "lat": K_COORD, "lon": K_COORD, "w": K_COORD, "h": K_COORD,
    "first": K_FIRST,
    "params": K_PARAMS,
    "utm_source": K_UTM, "utm_medium": K_UTM, "utm_campaign": K_UTM,
    "utm_term": K_UTM, "utm_content": K_UTM,
}

cdef tuple _UTM = (
    ("utm_source", "source"), ("utm_medium", "medium"),
    ("utm_campaign", "campaign"), ("utm_term", "term"),
    ("utm_content", "content"),
)


# --------------------------------------------------------------------------
# URL decoding

cdef inline int _hexval(unsigned char c) noexcept:
    if 48 <= c <= 57:
        return c - 48
    if 97 <= c <= 102:
        return c - 87
    if 65 <= c <= 70:
        return c - 55
    return -1


cdef str _decode(const unsigned char* p, Py_ssize_t n, bint plus):
    """%xx-decode (and '+' -> ' ' when plus), then UTF-8 'replace'."""
    cdef Py_ssize_t i, j
    cdef unsigned char c
    cdef int hi, lo
    cdef char stack[256]
    cdef char* buf
    for i in range(n):
        c = p[i]
        if c == 37 or (plus and c == 43):
            break
    else:
        return PyUnicode_DecodeUTF8(<char*>p, n, "replace")
    if n <= 256:
        buf = stack
    else:
        buf = <char*>PyMem_Malloc(n)
        if buf == NULL:
            raise MemoryError()
    j = 0
    i = 0
    while i < n:
        c = p[i]
        if c == 37 and i + 2 < n:
            hi = _hexval(p[i + 1])
            lo = _hexval(p[i + 2])
            if hi >= 0 and lo >= 0:
                buf[j] = <char>((hi << 4) | lo)
                j += 1
                i += 3
                continue
        if plus and c == 43:
            buf[j] = b' '
        else:
            buf[j] = <char>c
        j += 1
        i += 1
    try:
        return PyUnicode_DecodeUTF8(buf, j, "replace")
    finally:
        if buf != stack:
            PyMem_Free(buf)


cdef void _path_pairs(bytes path, dict data) except *:
    cdef const unsigned char* p = path
    cdef Py_ssize_t n = len(path)
    cdef Py_ssize_t start = 0, end
    cdef Py_ssize_t index = 0
    cdef bint pending = False
    cdef str key = None
    if n > 0 and p[0] == 47:
        start = 1
    while True:
        end = start
        while end < n and p[end] != 47:
            end += 1
        if index >= 2:
            if index & 1 == 0:
                key = _decode(p + start, end - start, False)
                pending = True
            else:
                if len(key) > 0:
                    data[key] = _decode(p + start, end - start, False)
                pending = False
        index += 1
        if end >= n:
            break
        start = end + 1
    if pending and len(key) > 0:
        data[key] = ""


cdef void _query_pairs(bytes query, dict data) except *:
    cdef const unsigned char* p = query
    cdef Py_ssize_t n = len(query)
    cdef Py_ssize_t start = 0, end, eq
    cdef str key
    while start <= n:
        end = start
        eq = -1
        while end < n and p[end] != 38:
            if eq < 0 and p[end] == 61:
                eq = end
            end += 1
        if end > start:
            if eq < 0:
                key = _decode(p + start, end - start, True)
                if len(key) > 0:
                    data[key] = ""
            else:
                key = _decode(p + start, eq - start, True)
                if len(key) > 0:
                    data[key] = _decode(p + eq + 1, end - eq - 1, True)
        start = end + 1


# --------------------------------------------------------------------------
# Values

cdef str _text(object value):
    """The text form of a non-null input value (see parse_ref.stringify)."""
    cdef type t = type(value)
    if t is str:
        return <str>value
    if value is True:
        return "true"
    if value is False:
        return "false"
    if t is int or t is float:
        return str(value)
    if t is dict or t is list:
        try:
            return (<bytes>_dumps(value)).decode("utf-8")
        except _JSONEncodeError:
            raise ParseError("JSON value nested too deeply") from None
    return str(value)


cdef enum:
    NUM_NONE = 0
    NUM_INT = 1      # [+-][0-9]+ (signed)
    NUM_FLOAT = 2    # the rest of the numeric grammar
    NUM_DIGITS = 3   # [0-9]+ (also an int)

cdef inline bint _isdigit(char c) noexcept:
    return 48 <= c <= 57


cdef int _scan_number(const char* d, Py_ssize_t n) noexcept:
    """Classify an ASCII string against the numeric grammar."""
    cdef Py_ssize_t i = 0, int_digits = 0, frac_digits = 0, exp_digits = 0
    cdef bint signed = False, dot = False, exp = False
    if i < n and (d[i] == b'+' or d[i] == b'-'):
        signed = True
        i += 1
    while i < n and _isdigit(d[i]):
        int_digits += 1
        i += 1
    if i < n and d[i] == b'.':
        dot = True
        i += 1
        while i < n and _isdigit(d[i]):
            frac_digits += 1
            i += 1
    if int_digits == 0 and frac_digits == 0:
        return NUM_NONE
    if i < n and (d[i] == b'e' or d[i] == b'E'):
        exp = True
        i += 1
        if i < n and (d[i] == b'+' or d[i] == b'-'):
            i += 1
        while i < n and _isdigit(d[i]):
            exp_digits += 1
            i += 1
        if exp_digits == 0:
            return NUM_NONE
    if i != n:
        return NUM_NONE
    if dot or exp:
        return NUM_FLOAT
    if signed:
        return NUM_INT
    return NUM_DIGITS


cdef bint _int64_from_digits(const char* d, Py_ssize_t n, int64_t* out) noexcept:
    """Parse [+-]?[0-9]+ into int64; False when out of range."""
    cdef Py_ssize_t i = 0
    cdef bint negative = False
    cdef uint64_t acc = 0, limit = 9223372036854775807ULL, digit
    if d[0] == b'+' or d[0] == b'-':
        negative = d[0] == b'-'
        i = 1
    if negative:
        limit += 1
    while i < n:
        digit = <uint64_t>(d[i] - 48)
        if acc > (limit - digit) // 10:
            return False
        acc = acc * 10 + digit
        i += 1
    if negative:
        out[0] = <int64_t>(0ULL - acc)
    else:
        out[0] = <int64_t>acc
    return True


cdef inline bint _int64_from_double(double f, int64_t* out) noexcept:
    if not isfinite(f):
        return False
    if not (-9223372036854775808.0 <= f < 9223372036854775808.0):
        return False
    out[0] = <int64_t>f
    return True


cdef inline const char* _ascii(object s, Py_ssize_t* n):
    """Data pointer of an ASCII str (NUL-terminated), else NULL."""
    if not PyUnicode_IS_ASCII(s):
        return NULL
    n[0] = len(<str>s)
    return <const char*>PyUnicode_DATA(s)


cdef bint _to_duration(object value, int64_t* out) except -1:
    cdef type t = type(value)
    cdef int overflow = 0
    cdef long long v
    cdef const char* d
    cdef Py_ssize_t n
    cdef int kind
    if t is int:
        v = PyLong_AsLongLongAndOverflow(value, &overflow)
        if overflow:
            return False
        out[0] = v
        return True
    if t is float:
        return _int64_from_double(<double>value, out)
    if t is str:
        d = _ascii(value, &n)
        if d == NULL:
            return False
        kind = _scan_number(d, n)
        if kind == NUM_INT or kind == NUM_DIGITS:
            return _int64_from_digits(d, n, out)
        if kind == NUM_FLOAT:
            return _int64_from_double(PyOS_string_to_double(d, NULL, NULL), out)
    return False


cdef bint _to_float(object value, double* out) except -1:
    cdef type t = type(value)
    cdef double f
    cdef const char* d
    cdef Py_ssize_t n
    if t is float:
        f = <double>value
    elif t is int:
        f = PyLong_AsDouble(value)
    elif t is str:
        d = _ascii(value, &n)
        if d == NULL or _scan_number(d, n) == NUM_NONE:
            return False
        f = PyOS_string_to_double(d, NULL, NULL)
    else:
        return False
    if not isfinite(f):
        return False
    out[0] = f
    return True


cdef bint _to_size(object value, int64_t* out) except -1:
    cdef type t = type(value)
    cdef int overflow = 0
    cdef long long v
    cdef double f
    cdef const char* d
    cdef Py_ssize_t n
    if t is int:
        v = PyLong_AsLongLongAndOverflow(value, &overflow)
        if overflow or v < 0:
            return False
        out[0] = v
        return True
    if t is float:
        f = <double>value
        if not isfinite(f) or f != floor(f) or f < 0:
            return False
        return _int64_from_double(f, out)
    if t is str:
        d = _ascii(value, &n)
        if d == NULL or _scan_number(d, n) != NUM_DIGITS:
            return False
        return _int64_from_digits(d, n, out)
    return False


cdef object _uuid(object value):
    """Canonical lowercase UUID string, or None when not a valid UUID."""
    cdef const char* d
    cdef Py_ssize_t n, i, j = 0
    cdef char out[36]
    cdef int v
    cdef bint nonzero = False, changed = False
    cdef unsigned char c
    if type(value) is not str:
        return None
    n = len(<str>value)
    if n != 36 and n != 32:
        return None
    if not PyUnicode_IS_ASCII(value):
        return None
    d = <const char*>PyUnicode_DATA(value)
    for i in range(n):
        c = <unsigned char>d[i]
        if n == 36 and (i == 8 or i == 13 or i == 18 or i == 23):
            if c != 45:
                return None
            out[j] = b'-'
            j += 1
            continue
        v = _hexval(c)
        if v < 0:
            return None
        if v:
            nonzero = True
        if 65 <= c <= 70:
            changed = True
        if n == 32 and (j == 8 or j == 13 or j == 18 or j == 23):
            out[j] = b'-'
            j += 1
        out[j] = _HEX[v]
        j += 1
    if not nonzero:
        return None
    if n == 36 and not changed:
        return value
    return PyUnicode_DecodeASCII(out, 36, NULL)


cdef str _bhash(str user_agent):
    cdef const char* d
    cdef Py_ssize_t n, i
    cdef bytes encoded
    cdef uint32_t h = 2166136261U
    cdef char out[8]
    cdef int k = 8
    if PyUnicode_IS_ASCII(user_agent):
        d = <const char*>PyUnicode_DATA(user_agent)
        n = len(user_agent)
    else:
        encoded = user_agent.encode("utf-8", "replace")
        d = encoded
        n = len(encoded)
    for i in range(n):
        h ^= <unsigned char>d[i]
        h *= 16777619U
    if h == 0:
        return "0"
    while h:
        k -= 1
        out[k] = _B36[h % 36]
        h //= 36
    return PyUnicode_DecodeASCII(out + k, 8 - k, NULL)


# --------------------------------------------------------------------------
# The request

def parse_track(path, query, body, ip, user_agent, accept_language,
                cookie_vid, now_ms, ids, url_prefix_filter):
    """One track request -> event dict (rules: engine.parse_ref)."""
    cdef dict data
    cdef dict params = {}
    cdef dict event
    cdef object key, value, nested, parsed
    cdef object request_vid = None, request_sid = None, uuid
    cdef object first_value = None
    cdef object lat_v = None, lon_v = None, w_v = None, h_v = None
    cdef dict utm = None
    cdef int kind
    cdef int64_t ival, wval, hval
    cdef double fval, lat, lon
    cdef bint new_visitor = False, lat_ok, lon_ok, first
    cdef str text, prefix = url_prefix_filter, target, utm_key

    # 1. Merge the input pairs.
    if body is None:
        data = {}
        _path_pairs(<bytes?>path, data)
        if query:
            _query_pairs(<bytes?>query, data)
    else:
        try:
            parsed = _loads(body)
        except _JSONDecodeError as exc:
            raise ParseError("malformed JSON: " + str(exc)[:80]) from None
        if type(parsed) is not dict:
            raise ParseError("JSON body must be an object")
        if query:
            data = {}
            _query_pairs(<bytes?>query, data)
            data.update(<dict>parsed)
        else:
            data = <dict>parsed

    # 2. The params object first; top-level keys overwrite its pairs.
    nested = data.get("params")
    if type(nested) is dict:
        for key, value in (<dict>nested).items():
            if value is not None:
                params[key] = _text(value)

    event = {"eid": None, "vid": None, "sid": None, "created": now_ms,
             "first": False, "ip": ip}

    # 3. Every top-level key, in input order.
    for key, value in data.items():
        if value is None:
            continue
        parsed = _KIND.get(key)
        kind = K_UNKNOWN if parsed is None else <int>parsed
        if kind == K_TEXT:
            event[key] = _text(value)
        elif kind == K_UNKNOWN:
            params[key] = _text(value)
        elif kind == K_URL:
            text = _text(value)
            if prefix and text.startswith(prefix):
                text = text[len(prefix):]
            event["url"] = text
        elif kind == K_ID:
            uuid = _uuid(value)
            if uuid is None:
                params[key] = _text(value)
            elif key == "vid":
                request_vid = uuid
            else:
                request_sid = uuid
        elif kind == K_COORD:
            if key == "lat":
                lat_v = value
            elif key == "lon":
                lon_v = value
            elif key == "w":
                w_v = value
            else:
                h_v = value
        elif kind == K_DURATION:
            if _to_duration(value, &ival):
                event["duration"] = ival
            else:
                params[key] = _text(value)
        elif kind == K_SCORE:
            if _to_float(value, &fval):
                event["score"] = fval
            else:
                params[key] = _text(value)
        elif kind == K_FIRST:
            first_value = _text(value)
        elif kind == K_VERSION:
            event["ver"] = _text(value)
        elif kind == K_PARAMS:
            if type(value) is not dict:
                params[key] = _text(value)
        else:  # K_UTM
            if utm is None:
                utm = {}
            utm[key] = _text(value)

    # 4. UTM: an explicit key wins over its utm_ key.
    if utm is not None:
        for utm_key, target in _UTM:
            value = utm.get(utm_key)
            if value is None or data.get(target) is not None:
                continue
            if target == "content":
                params["content"] = value
            else:
                event[target] = value

    # 5. Pairs that only make a column together.
    if lat_v is not None or lon_v is not None:
        lat_ok = lat_v is not None and _to_float(lat_v, &lat)
        lon_ok = lon_v is not None and _to_float(lon_v, &lon)
        if (lat_ok and lon_ok and -90.0 <= lat <= 90.0
                and -180.0 <= lon <= 180.0):
            event["latlon"] = [lat, lon]
        else:
            if lat_v is not None:
                params["lat"] = _text(lat_v)
            if lon_v is not None:
                params["lon"] = _text(lon_v)
    if w_v is not None or h_v is not None:
        if (w_v is not None and h_v is not None
                and _to_size(w_v, &wval) and _to_size(h_v, &hval)):
            event["vp"] = [wval, hval]
        else:
            if w_v is not None:
                params["w"] = _text(w_v)
            if h_v is not None:
                params["h"] = _text(h_v)

    # 6. Identity: ids.new() for eid, then vid, then sid.
    event["eid"] = ids.new()
    if request_vid is not None:
        event["vid"] = request_vid
    else:
        uuid = _uuid(cookie_vid)
        if uuid is not None:
            event["vid"] = uuid
        else:
            uuid = ids.new()
            event["vid"] = uuid
            new_visitor = True
    if request_sid is not None:
        event["sid"] = request_sid
    elif new_visitor:
        event["sid"] = uuid
    else:
        event["sid"] = ids.new()
    first = new_visitor or (first_value is not None
                            and first_value != "false")
    event["first"] = first

    # 7. Server-derived columns.
    if user_agent is not None:
        event["browser"] = user_agent
        event["bhash"] = _bhash(user_agent)
    if accept_language is not None:
        text = (<str?>accept_language).partition(",")[0].partition(";")[0].strip()
        if text:
            event["culture"] = text
    value = event.get("tz")
    if value is not None:
        value = _ZONES.get(value)
        if value is not None:
            event["country"] = value
    if new_visitor:
        event["new_visitor"] = True
    event["params"] = params
    return event
