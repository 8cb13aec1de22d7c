# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled request parser (the hot path): a tracked request straight into
its spool record.

``Encoder.encode`` turns a request's path, query, body and headers into the
event record of engine/record.py, appended to a C buffer (the spool's open
group), without building a dict or a str per field: tuplets and query pairs
are percent-decoded into a reusable arena, merged in an open-addressing table,
typed in C and written out. The rules are engine/parse_ref.py's; the
equivalence tests (tests/unit/test_parse_equivalence.py) hold this module to
``record.encode(parse_ref.parse_track(...))``, byte for byte.

JSON bodies are decoded by orjson; their values are typed from the Python
objects. ``decode`` is the compiled inverse used by the store processes.
"""
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize
from cpython.conversion cimport PyOS_string_to_double
from cpython.dict cimport PyDict_Next, PyDict_GetItem
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_AsDouble
from cpython.object cimport PyObject
from cpython.unicode cimport PyUnicode_DecodeUTF8, PyUnicode_DecodeASCII
from libc.math cimport isfinite, floor
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memcpy, memcmp, memset
from posix.time cimport clock_gettime, timespec, CLOCK_REALTIME

from engine._uuidtext cimport hex_digit

import secrets

import orjson

from engine.errors import ParseError
from engine.zones import ZONES

__all__ = ["TimeUUIDGen", "Encoder", "encode_track", "encode_batch", "parse_track", "decode",
           "cookie_vid", "BatchTooLarge"]

cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object o)
    void* PyUnicode_DATA(object o)
    const char* PyUnicode_AsUTF8AndSize(object o, Py_ssize_t* size) except NULL
    void PyObject_GC_UnTrack(void* o)

cdef object _loads = orjson.loads
cdef object _dumps = orjson.dumps
cdef object _JSONDecodeError = orjson.JSONDecodeError
cdef object _JSONEncodeError = orjson.JSONEncodeError
cdef dict _ZONES = ZONES

cdef const char* _HEX = b"0123456789abcdef"
cdef const char* _B36 = b"0123456789abcdefghijklmnopqrstuvwxyz"
cdef uint64_t _UUID_EPOCH_OFFSET = 0x01B21DD213814000ULL
cdef uint64_t _TS_MASK = (1ULL << 60) - 1

# Record layout (engine/record.py).
cdef enum:
    KIND_EVENT = 2
    F_FIRST = 1
    F_NEW_VISITOR = 2
    F_LATLON = 4
    F_VP = 8
    F_DURATION = 16
    F_SCORE = 32
    PARAM = 0x80
    HEAD_SIZE = 58
    NTAGS = 27
    T_IP = 1
    T_LAST = 4
    T_URL = 5
    T_BROWSER = 21
    T_TZ = 24
    T_CULTURE = 27


# ============================================================== buffers

cdef int buf_reserve(Buf* b, Py_ssize_t extra) except -1:
    cdef Py_ssize_t need = b.len + extra, cap
    cdef char* data
    if need <= b.cap:
        return 0
    cap = b.cap * 2 if b.cap else 4096
    while cap < need:
        cap *= 2
    data = <char*>realloc(b.data, cap)
    if data == NULL:
        raise MemoryError()
    b.data, b.cap = data, cap
    return 0


cdef void buf_free(Buf* b) noexcept:
    free(b.data)
    b.data, b.len, b.cap = NULL, 0, 0


cdef inline void _put(Buf* b, const void* p, Py_ssize_t n) noexcept:
    memcpy(b.data + b.len, p, n)
    b.len += n


cdef inline void _put_u8(Buf* b, uint8_t v) noexcept:
    b.data[b.len] = <char>v
    b.len += 1


cdef inline void _put_varint(Buf* b, Py_ssize_t n) noexcept:
    cdef uint64_t v = <uint64_t>n
    while v >= 0x80:
        b.data[b.len] = <char>((v & 0x7F) | 0x80)
        b.len += 1
        v >>= 7
    b.data[b.len] = <char>v
    b.len += 1


cdef int _put_text(Buf* b, const char* p, Py_ssize_t n) except -1:
    buf_reserve(b, n + 10)
    _put_varint(b, n)
    _put(b, p, n)
    return 0


# ============================================================== time UUIDs

cdef inline void _put_hex(char* out, uint64_t value, int digits) noexcept:
    cdef int i
    for i in range(digits - 1, -1, -1):
        out[i] = _HEX[value & 0xF]
        value >>= 4


cdef str _uuid_str(const uint8_t* b):
    cdef char out[36]
    cdef int i, j = 0
    for i in range(16):
        if i == 4 or i == 6 or i == 8 or i == 10:
            out[j] = b'-'
            j += 1
        out[j] = _HEX[b[i] >> 4]
        out[j + 1] = _HEX[b[i] & 0xF]
        j += 2
    return PyUnicode_DecodeASCII(out, 36, NULL)


cdef class TimeUUIDGen:
    """Version 1 UUIDs; strictly increasing timestamps per generator.

    ``frozen_ns`` (tests): read the clock as this fixed time, so the ids are
    a known sequence (each one the last timestamp + 1)."""

    def __init__(self, node=None, clock_seq=None, frozen_ns=None):
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
        self._frozen_ns = -1 if frozen_ns is None else frozen_ns

    @property
    def node(self):
        return self._node

    @property
    def clock_seq(self):
        return self._clock_seq

    cdef void next_bytes(self, uint8_t* out) noexcept:
        cdef timespec now
        cdef uint64_t ts, time_low, time_mid, time_hi, node = self._node
        cdef int i
        if self._frozen_ns >= 0:
            ts = <uint64_t>self._frozen_ns // 100 + _UUID_EPOCH_OFFSET
        else:
            clock_gettime(CLOCK_REALTIME, &now)
            ts = (<uint64_t>now.tv_sec * 10000000ULL + <uint64_t>now.tv_nsec // 100
                  + _UUID_EPOCH_OFFSET)
        if ts <= self._last:
            ts = self._last + 1
        self._last = ts
        ts &= _TS_MASK
        time_low = ts & 0xFFFFFFFFULL
        time_mid = (ts >> 32) & 0xFFFF
        time_hi = ((ts >> 48) & 0x0FFF) | 0x1000
        out[0] = <uint8_t>(time_low >> 24)
        out[1] = <uint8_t>(time_low >> 16)
        out[2] = <uint8_t>(time_low >> 8)
        out[3] = <uint8_t>time_low
        out[4] = <uint8_t>(time_mid >> 8)
        out[5] = <uint8_t>time_mid
        out[6] = <uint8_t>(time_hi >> 8)
        out[7] = <uint8_t>time_hi
        out[8] = <uint8_t>(((self._clock_seq >> 8) & 0x3F) | 0x80)
        out[9] = <uint8_t>(self._clock_seq & 0xFF)
        for i in range(6):
            out[10 + i] = <uint8_t>(node >> (8 * (5 - i)))

    def new(self):
        cdef uint8_t raw[16]
        self.next_bytes(raw)
        return _uuid_str(raw)


cdef int _next_id(object ids, uint8_t* out) except -1:
    """The next id of ``ids``: a TimeUUIDGen in C, else anything with .new()."""
    cdef bytes text
    if type(ids) is TimeUUIDGen:
        (<TimeUUIDGen>ids).next_bytes(out)
        return 0
    text = str(ids.new()).encode("ascii")
    if not _uuid_bytes(PyBytes_AS_STRING(text), PyBytes_GET_SIZE(text), out):
        raise ValueError("ids.new() must return a UUID")
    return 0


# ============================================================== bytes helpers

cdef inline int _hexval(unsigned char c) noexcept:
    return hex_digit[c]


cdef bint _uuid_bytes(const char* d, Py_ssize_t n, uint8_t* out) noexcept:
    """Parse 8-4-4-4-12 (or 32) hex digits, any case, not nil, into 16 bytes."""
    cdef Py_ssize_t i
    cdef int j = 0, hi = -1, v
    cdef bint nonzero = False
    cdef unsigned char c
    if n != 36 and n != 32:
        return False
    for i in range(n):
        c = <unsigned char>d[i]
        if n == 36 and (i == 8 or i == 13 or i == 18 or i == 23):
            if c != 45:
                return False
            continue
        v = _hexval(c)
        if v < 0:
            return False
        if v:
            nonzero = True
        if hi < 0:
            hi = v
        else:
            out[j] = <uint8_t>((hi << 4) | v)
            j += 1
            hi = -1
    return nonzero


cdef extern from *:
    """
    #include <string.h>
    #include <stdint.h>
    /* Eight bytes at a time: the spans are mostly plain ASCII. */
    static inline int trk_is_ascii(const char *p, Py_ssize_t n) {
        Py_ssize_t i = 0;
        uint64_t acc = 0, w;
        for (; i + 8 <= n; i += 8) { memcpy(&w, p + i, 8); acc |= w; }
        for (; i < n; i++) acc |= (unsigned char)p[i];
        return (acc & 0x8080808080808080ULL) == 0;
    }
    """
    bint _is_ascii "trk_is_ascii"(const char* p, Py_ssize_t n) noexcept
    const void* memchr(const void* s, int c, size_t n) noexcept


cdef bint _utf8_valid(const unsigned char* s, Py_ssize_t n) noexcept:
    """Strict UTF-8 (no overlongs, surrogates or code points past U+10FFFF):
    exactly what Python's decoder accepts without replacing anything."""
    cdef Py_ssize_t i = 0
    cdef unsigned char c, c1
    while i < n:
        c = s[i]
        if c < 0x80:
            i += 1
        elif 0xC2 <= c <= 0xDF:
            if i + 1 >= n or (s[i + 1] & 0xC0) != 0x80:
                return False
            i += 2
        elif 0xE0 <= c <= 0xEF:
            if i + 2 >= n:
                return False
            c1 = s[i + 1]
            if (c1 & 0xC0) != 0x80 or (s[i + 2] & 0xC0) != 0x80:
                return False
            if (c == 0xE0 and c1 < 0xA0) or (c == 0xED and c1 > 0x9F):
                return False
            i += 3
        elif 0xF0 <= c <= 0xF4:
            if i + 3 >= n:
                return False
            c1 = s[i + 1]
            if ((c1 & 0xC0) != 0x80 or (s[i + 2] & 0xC0) != 0x80
                    or (s[i + 3] & 0xC0) != 0x80):
                return False
            if (c == 0xF0 and c1 < 0x90) or (c == 0xF4 and c1 > 0x8F):
                return False
            i += 4
        else:
            return False
    return True


cdef inline uint32_t _fnv32(const char* p, Py_ssize_t n) noexcept:
    cdef uint32_t h = 2166136261U
    cdef Py_ssize_t i
    for i in range(n):
        h ^= <unsigned char>p[i]
        h *= 16777619U
    return h


# ============================================================== numbers

cdef enum:
    NUM_NONE = 0
    NUM_INT = 1      # [+-][0-9]+ (signed)
    NUM_FLOAT = 2    # the rest of the numeric grammar
    NUM_DIGITS = 3   # [0-9]+ (also an int)

cdef inline bint _isdigit(char c) noexcept:
    return 48 <= c <= 57


cdef int _scan_number(const char* d, Py_ssize_t n) noexcept:
    """Classify an ASCII string against the numeric grammar (parse_ref)."""
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
    out[0] = <int64_t>(0ULL - acc) if negative else <int64_t>acc
    return True


cdef inline bint _int64_from_double(double f, int64_t* out) noexcept:
    if not isfinite(f):
        return False
    if not (-9223372036854775808.0 <= f < 9223372036854775808.0):
        return False
    out[0] = <int64_t>f
    return True


cdef double[23] _POW10 = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10,
                          1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20,
                          1e21, 1e22]


cdef bint _fast_double(const char* d, Py_ssize_t n, double* out) noexcept:
    """Exact for [+-]digits[.digits] with at most 15 significant digits: the
    mantissa and 10**k are exact doubles and one IEEE division rounds
    correctly (Clinger's fast path). Anything else goes to strtod."""
    cdef Py_ssize_t i = 0
    cdef uint64_t m = 0
    cdef int digits = 0, frac = 0
    cdef bint negative = False, dot = False
    if i < n and (d[i] == b'+' or d[i] == b'-'):
        negative = d[i] == b'-'
        i += 1
    while i < n:
        if _isdigit(d[i]):
            if digits or d[i] != b'0':
                digits += 1
            if digits > 15:
                return False
            m = m * 10 + <uint64_t>(d[i] - 48)
            if dot:
                frac += 1
        elif d[i] == b'.' and not dot:
            dot = True
        else:
            return False            # an exponent, or not a number
        i += 1
    if frac > 22:
        return False
    out[0] = <double>m / _POW10[frac]
    if negative:
        out[0] = -out[0]
    return True


cdef double _to_double(const char* d, Py_ssize_t n) except? -1.0:
    """strtod of an ASCII span known to match the numeric grammar."""
    cdef char stack[64]
    cdef bytes copy
    cdef double fast
    if _fast_double(d, n, &fast):
        return fast
    if n < 64:
        memcpy(stack, d, n)
        stack[n] = 0
        return PyOS_string_to_double(stack, NULL, NULL)
    copy = PyBytes_FromStringAndSize(d, n)
    return PyOS_string_to_double(PyBytes_AS_STRING(copy), NULL, NULL)


# ============================================================== values

cdef struct Entry:
    const char* kp
    Py_ssize_t kn
    uint32_t h
    Val v
    bint from_query


cdef struct OMap:
    # Insertion-ordered map of spans; a key put again keeps its position.
    Entry* e
    int n
    int cap
    int32_t* idx
    int mask


cdef int _omap_init(OMap* m) except -1:
    m.cap = 32
    m.e = <Entry*>malloc(m.cap * sizeof(Entry))
    m.mask = 63
    m.idx = <int32_t*>malloc((m.mask + 1) * sizeof(int32_t))
    if m.e == NULL or m.idx == NULL:
        raise MemoryError()
    memset(m.idx, 0xFF, (m.mask + 1) * sizeof(int32_t))
    m.n = 0
    return 0


cdef void _omap_free(OMap* m) noexcept:
    free(m.e)
    free(m.idx)


cdef int _omap_reset(OMap* m) except -1:
    if m.mask > 255:            # a huge request grew it: give the memory back
        _omap_free(m)
        return _omap_init(m)
    if m.n:
        memset(m.idx, 0xFF, (m.mask + 1) * sizeof(int32_t))
    m.n = 0
    return 0


cdef int _omap_find(OMap* m, const char* kp, Py_ssize_t kn, uint32_t h) noexcept:
    cdef int slot = h & m.mask, i
    while True:
        i = m.idx[slot]
        if i < 0:
            return -1
        if m.e[i].h == h and m.e[i].kn == kn and memcmp(m.e[i].kp, kp, kn) == 0:
            return i
        slot = (slot + 1) & m.mask


cdef int _omap_grow(OMap* m) except -1:
    cdef int size, i, slot
    cdef Entry* e
    if m.n >= m.cap:
        e = <Entry*>realloc(m.e, 2 * m.cap * sizeof(Entry))
        if e == NULL:
            raise MemoryError()
        m.e, m.cap = e, 2 * m.cap
    if 2 * (m.n + 1) > m.mask + 1:
        size = 2 * (m.mask + 1)
        free(m.idx)
        m.idx = <int32_t*>malloc(size * sizeof(int32_t))
        if m.idx == NULL:
            raise MemoryError()
        m.mask = size - 1
        memset(m.idx, 0xFF, size * sizeof(int32_t))
        for i in range(m.n):
            slot = m.e[i].h & m.mask
            while m.idx[slot] >= 0:
                slot = (slot + 1) & m.mask
            m.idx[slot] = i
    return 0


cdef int _omap_put(OMap* m, const char* kp, Py_ssize_t kn) except -1:
    """Index of ``key``'s entry, appended (value unset) when new."""
    cdef uint32_t h = _fnv32(kp, kn)
    cdef int i = _omap_find(m, kp, kn, h), slot
    if i >= 0:
        return i
    _omap_grow(m)
    i = m.n
    m.n += 1
    m.e[i].kp, m.e[i].kn, m.e[i].h = kp, kn, h
    m.e[i].from_query = False
    slot = h & m.mask
    while m.idx[slot] >= 0:
        slot = (slot + 1) & m.mask
    m.idx[slot] = i
    return i


cdef inline int _omap_get(OMap* m, const char* kp, Py_ssize_t kn) noexcept:
    return _omap_find(m, kp, kn, _fnv32(kp, kn))


# ============================================================== key kinds

cdef enum:
    K_UNKNOWN = 0
    K_TEXT = 1
    K_VID = 2
    K_SID = 3
    K_DURATION = 4
    K_SCORE = 5
    K_LAT = 6
    K_LON = 7
    K_W = 8
    K_H = 9
    K_FIRST = 10
    K_PARAMS = 11
    K_UTM = 12

cdef dict _TEXT_TAG = {
    "uid": 2, "app": 3, "last": 4, "url": 5, "ptype": 6, "auth": 7, "xid": 8,
    "split": 9, "ename": 10, "etyp": 11, "version": 12, "sink": 13, "targets": 14,
    "source": 15, "medium": 16, "campaign": 17, "term": 18, "ref": 19, "aff": 20,
    "device": 22, "os": 23, "tz": 24, "outcome": 25, "username": 26,
}
cdef dict _OTHER_KIND = {
    "vid": K_VID, "sid": K_SID, "duration": K_DURATION, "score": K_SCORE,
    "lat": K_LAT, "lon": K_LON, "w": K_W, "h": K_H, "first": K_FIRST,
    "params": K_PARAMS, "utm_source": K_UTM, "utm_medium": K_UTM,
    "utm_campaign": K_UTM, "utm_term": K_UTM, "utm_content": K_UTM,
}
# utm_ key -> the explicit key that wins over it (its target), in rule order.
cdef tuple _UTM = (("utm_source", "source", 15, b"source"),
                   ("utm_medium", "medium", 16, b"medium"),
                   ("utm_campaign", "campaign", 17, b"campaign"),
                   ("utm_term", "term", 18, b"term"),
                   ("utm_content", "content", 0, b"content"))

cdef enum:
    KEYTAB = 128
cdef bytes _KEY_BLOB
cdef int _key_off[KEYTAB]
cdef int _key_len[KEYTAB]
cdef int _key_code[KEYTAB]       # kind | tag << 8


cdef void _build_keytab() except *:
    global _KEY_BLOB
    cdef bytearray blob = bytearray()
    cdef int slot
    cdef bytes k
    memset(_key_len, 0xFF, sizeof(_key_len))
    for name, code in list(((n, K_TEXT | (t << 8)) for n, t in _TEXT_TAG.items())) + \
            list(_OTHER_KIND.items()):
        k = name.encode()
        slot = _fnv32(k, len(k)) & (KEYTAB - 1)
        while _key_len[slot] >= 0:
            slot = (slot + 1) & (KEYTAB - 1)
        _key_off[slot] = len(blob)
        _key_len[slot] = len(k)
        _key_code[slot] = code
        blob += k
    _KEY_BLOB = bytes(blob)

_build_keytab()


cdef int _classify(const char* k, Py_ssize_t n) noexcept:
    """kind | tag << 8 of an input key (K_UNKNOWN when not a known name)."""
    cdef int slot = _fnv32(k, n) & (KEYTAB - 1)
    cdef const char* blob = PyBytes_AS_STRING(_KEY_BLOB)
    while _key_len[slot] >= 0:
        if _key_len[slot] == n and memcmp(blob + _key_off[slot], k, n) == 0:
            return _key_code[slot]
        slot = (slot + 1) & (KEYTAB - 1)
    return K_UNKNOWN


# ============================================================== cookies

cdef inline bint _ws(unsigned char c) noexcept:
    return c == 32 or (9 <= c <= 13)


cdef bytes cookie_vid_c(const char* p, Py_ssize_t n):
    """The value of cookie ``vid`` in a Cookie header (first one wins), quotes
    stripped, or None (rules: engine.ingest.app.cookie_value)."""
    cdef Py_ssize_t start = 0, end, a, b, eq, i
    while start <= n:
        end = start
        while end < n and p[end] != b';':
            end += 1
        a, b = start, end
        while a < b and _ws(<unsigned char>p[a]):
            a += 1
        while b > a and _ws(<unsigned char>p[b - 1]):
            b -= 1
        eq = -1
        for i in range(a, b):
            if p[i] == b'=':
                eq = i
                break
        if eq - a == 3 and memcmp(p + a, b"vid", 3) == 0:
            a = eq + 1
            while a < b and p[a] == b'"':
                a += 1
            while b > a and p[b - 1] == b'"':
                b -= 1
            return PyBytes_FromStringAndSize(p + a, b - a)
        start = end + 1
    return None


def cookie_vid(raw):
    """``cookie_vid_c`` for Python callers (tests)."""
    cdef bytes data = bytes(raw)
    return cookie_vid_c(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))


# ============================================================== the encoder

@cython.final
cdef class Encoder:
    """One per worker: scratch memory reused by every request.

    ``url_filter`` is the config's compiled UrlPrefixFilter (or None)."""

    def __cinit__(self):
        self.arena = NULL
        self.arena_cap = 0
        self.merged = malloc(sizeof(OMap))
        self.params = malloc(sizeof(OMap))
        if self.merged == NULL or self.params == NULL:
            raise MemoryError()
        _omap_init(<OMap*>self.merged)
        _omap_init(<OMap*>self.params)
        self.keep = []

    def __init__(self, url_filter=None):
        self.url_filter = url_filter

    def __dealloc__(self):
        free(self.arena)
        if self.merged != NULL:
            _omap_free(<OMap*>self.merged)
            free(self.merged)
        if self.params != NULL:
            _omap_free(<OMap*>self.params)
            free(self.params)

    # ---- scratch -----------------------------------------------------
    cdef int _arena_for(self, Py_ssize_t n) except -1:
        """Room for ``n`` bytes; reserved before a request, never moved during it."""
        if n > self.arena_cap or (self.arena_cap > (1 << 16) and n < 4096):
            free(self.arena)
            self.arena_cap = n if n > 4096 else 4096
            self.arena = <char*>malloc(self.arena_cap)
            if self.arena == NULL:
                self.arena_cap = 0
                raise MemoryError()
        self.arena_len = 0
        return 0

    cdef const char* _decoded(self, const char* src, Py_ssize_t n, bint plus,
                              Py_ssize_t* out_n) except NULL:
        """%xx-decode (and '+' -> ' ' when plus) into the arena, then make it
        valid UTF-8 the way bytes.decode("utf-8", "replace") would. Without
        ``plus`` (a path segment) a malformed escape is a ParseError."""
        cdef char* dst = self.arena + self.arena_len
        cdef Py_ssize_t i = 0, j = 0
        cdef unsigned char c
        cdef int hi, lo
        if memchr(src, b'%', n) == NULL and not (plus and memchr(src, b'+', n) != NULL):
            return self._utf8(src, n, out_n)     # nothing to decode: the request's bytes
        while i < n:
            c = <unsigned char>src[i]
            if c == 37 and i + 2 < n:
                hi = _hexval(src[i + 1])
                lo = _hexval(src[i + 2])
                if hi >= 0 and lo >= 0:
                    dst[j] = <char>((hi << 4) | lo)
                    j += 1
                    i += 3
                    continue
            if c == 37 and not plus:
                raise ParseError("malformed percent-encoding in the path")
            dst[j] = b' ' if plus and c == 43 else <char>c
            j += 1
            i += 1
        self.arena_len += j
        return self._utf8(dst, j, out_n)

    cdef const char* _utf8(self, const char* p, Py_ssize_t n, Py_ssize_t* out_n) except NULL:
        """``p`` itself when valid UTF-8, else its "replace" decoding (arena)."""
        cdef bytes fixed
        cdef char* dst
        if _is_ascii(p, n) or _utf8_valid(<const unsigned char*>p, n):
            out_n[0] = n
            if n == 0:
                return ""
            return p
        fixed = PyUnicode_DecodeUTF8(p, n, "replace").encode("utf-8")
        self.keep.append(fixed)
        out_n[0] = PyBytes_GET_SIZE(fixed)
        return PyBytes_AS_STRING(fixed)

    # ---- merging the request's pairs ---------------------------------
    cdef int _path_pairs(self, bytes path) except -1:
        cdef OMap* m = <OMap*>self.merged
        cdef const char* p = PyBytes_AS_STRING(path)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(path), start = 0, end, kn = 0, vn
        cdef Py_ssize_t index = 0
        cdef const char* kp = NULL
        cdef const char* vp
        cdef bint pending = False
        cdef int i
        if n > 0 and p[0] == b'/':
            start = 1
        while True:
            end = start
            while end < n and p[end] != b'/':
                end += 1
            if index >= 2:
                if index & 1 == 0:
                    kp = self._decoded(p + start, end - start, False, &kn)
                    pending = True
                else:
                    # decoded even under an empty key: a malformed escape
                    # anywhere in the path is a bad request
                    vp = self._decoded(p + start, end - start, False, &vn)
                    if kn > 0:
                        i = _omap_put(m, kp, kn)
                        m.e[i].v.p, m.e[i].v.n = vp, vn
                        m.e[i].v.obj, m.e[i].v.has_text = NULL, True
                    pending = False
            index += 1
            if end >= n:
                break
            start = end + 1
        if pending and kn > 0:
            i = _omap_put(m, kp, kn)
            m.e[i].v.p, m.e[i].v.n = b"", 0
            m.e[i].v.obj, m.e[i].v.has_text = NULL, True
        return 0

    cdef int _query_pairs(self, bytes query) except -1:
        """Query pairs win over path pairs; a repeated query key keeps its
        first value (Go's url.Values.Get)."""
        cdef OMap* m = <OMap*>self.merged
        cdef const char* p = PyBytes_AS_STRING(query)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(query), start = 0, end, eq, kn, vn
        cdef const char* kp
        cdef const char* vp
        cdef int i
        while start <= n:
            end = start
            eq = -1
            while end < n and p[end] != b'&':
                if eq < 0 and p[end] == b'=':
                    eq = end
                end += 1
            if end > start:
                kp = self._decoded(p + start, (end if eq < 0 else eq) - start, True, &kn)
                if kn > 0:
                    i = _omap_put(m, kp, kn)
                    if not m.e[i].from_query:
                        if eq < 0:
                            vp, vn = b"", 0
                        else:
                            vp = self._decoded(p + eq + 1, end - eq - 1, True, &vn)
                        m.e[i].v.p, m.e[i].v.n = vp, vn
                        m.e[i].v.obj, m.e[i].v.has_text = NULL, True
                        m.e[i].from_query = True
            start = end + 1
        return 0

    # ---- values ------------------------------------------------------
    cdef int _text(self, Val* v) except -1:
        """Give a JSON value its text (parse_ref.stringify)."""
        cdef object o, text
        if v.has_text:
            return 0
        o = <object>v.obj
        if type(o) is str:
            text = o
        elif o is True:
            text = "true"
        elif o is False:
            text = "false"
        elif type(o) is dict or type(o) is list:
            try:
                text = (<bytes>_dumps(o)).decode("utf-8")
            except _JSONEncodeError:
                raise ParseError("JSON value nested too deeply") from None
            self.keep.append(text)
        else:
            text = str(o)
            self.keep.append(text)
        v.p = PyUnicode_AsUTF8AndSize(text, &v.n)
        v.has_text = True
        return 0

    cdef int _duration(self, Val* v, int64_t* out) except -1:
        cdef object o
        cdef int overflow = 0, kind
        cdef long long x
        if v.obj != NULL and type(<object>v.obj) is not str:
            o = <object>v.obj
            if type(o) is int:
                x = PyLong_AsLongLongAndOverflow(o, &overflow)
                if overflow:
                    return False
                out[0] = x
                return True
            if type(o) is float:
                return _int64_from_double(<double>o, out)
            return False
        self._text(v)
        kind = _scan_number(v.p, v.n)
        if kind == NUM_INT or kind == NUM_DIGITS:
            return _int64_from_digits(v.p, v.n, out)
        if kind == NUM_FLOAT:
            return _int64_from_double(_to_double(v.p, v.n), out)
        return False

    cdef int _float(self, Val* v, double* out) except -1:
        cdef object o
        cdef double f
        if v.obj != NULL and type(<object>v.obj) is not str:
            o = <object>v.obj
            if type(o) is float:
                f = <double>o
            elif type(o) is int:
                f = PyLong_AsDouble(o)
            else:
                return False
        else:
            self._text(v)
            if _scan_number(v.p, v.n) == NUM_NONE:
                return False
            f = _to_double(v.p, v.n)
        if not isfinite(f):
            return False
        out[0] = f
        return True

    cdef int _size(self, Val* v, int64_t* out) except -1:
        cdef object o
        cdef int overflow = 0
        cdef long long x
        cdef double f
        if v.obj != NULL and type(<object>v.obj) is not str:
            o = <object>v.obj
            if type(o) is int:
                x = PyLong_AsLongLongAndOverflow(o, &overflow)
                if overflow or x < 0:
                    return False
                out[0] = x
                return True
            if type(o) is float:
                f = <double>o
                if not isfinite(f) or f != floor(f) or f < 0:
                    return False
                return _int64_from_double(f, out)
            return False
        self._text(v)
        if _scan_number(v.p, v.n) != NUM_DIGITS:
            return False
        return _int64_from_digits(v.p, v.n, out)

    cdef int _param(self, const char* kp, Py_ssize_t kn, Val* v) except -1:
        """params[key] = text of v (a key already there keeps its place)."""
        cdef OMap* m = <OMap*>self.params
        cdef int i
        self._text(v)
        i = _omap_put(m, kp, kn)
        m.e[i].v = v[0]
        return 0

    cdef int _filtered(self, Val* v) except -1:
        """Apply UrlPrefixFilter to a url/last value."""
        cdef str before = PyUnicode_DecodeUTF8(v.p, v.n, "surrogatepass")
        cdef str after = self.url_filter(before)
        self.keep.append(after)
        v.p = PyUnicode_AsUTF8AndSize(after, &v.n)
        return 0

    # ---- the request -------------------------------------------------
    cdef int encode(self, Buf* out, bytes path, bytes query, bytes body, str ip,
                    bytes user_agent, bytes accept_language, bytes cookie_vid,
                    int64_t now_ms, object ids, Outcome* res) except -1:
        """Append the record of one request to ``out``; fill ``res``.
        Raises ParseError for a body that is not a JSON object."""
        cdef OMap* merged = <OMap*>self.merged
        cdef OMap* params = <OMap*>self.params
        cdef Py_ssize_t room = 64
        cdef dict data = None
        if path is not None:
            room += 3 * PyBytes_GET_SIZE(path)
        if query is not None:
            room += 3 * PyBytes_GET_SIZE(query)
        self._arena_for(room)
        _omap_reset(merged)
        _omap_reset(params)
        if self.keep:
            self.keep = []
        if body is None:
            self._path_pairs(path)
            if query:
                self._query_pairs(query)
        else:
            data = self._json(body, query)
        try:
            return self._emit(out, data, ip, user_agent, accept_language, cookie_vid,
                              now_ms, ids, res)
        finally:
            if data is not None:
                self.keep.append(data)   # spans point into it until the next request

    cdef dict _json(self, bytes body, bytes query):
        cdef object parsed = loads_body(body)
        if type(parsed) is not dict:
            raise ParseError("JSON body must be an object")
        return _with_query(<dict>parsed, query)

    cdef int encode_batch_item(self, Buf* out, Py_ssize_t index, object item, bytes query,
                               str ip, bytes user_agent, bytes accept_language,
                               bytes cookie_vid, int64_t now_ms, object ids,
                               Outcome* res) except -1:
        """One element of a batch; its errors name its index."""
        if type(item) is not dict:
            raise ParseError("element %d: JSON body must be an object" % index)
        try:
            return self.encode_object(out, <dict>item, query, ip, user_agent,
                                      accept_language, cookie_vid, now_ms, ids, res)
        except ParseError as exc:
            raise ParseError("element %d: %s" % (index, exc)) from None

    cdef int encode_object(self, Buf* out, dict obj, bytes query, str ip,
                           bytes user_agent, bytes accept_language, bytes cookie_vid,
                           int64_t now_ms, object ids, Outcome* res) except -1:
        """``encode`` for a body already decoded to one JSON object (one
        element of a batch)."""
        cdef dict data
        self._arena_for(64 + (3 * PyBytes_GET_SIZE(query) if query is not None else 0))
        _omap_reset(<OMap*>self.merged)
        _omap_reset(<OMap*>self.params)
        if self.keep:
            self.keep = []
        data = _with_query(obj, query)
        try:
            return self._emit(out, data, ip, user_agent, accept_language, cookie_vid,
                              now_ms, ids, res)
        finally:
            self.keep.append(data)

    cdef int _entries_from(self, dict data) except -1:
        """The JSON object's items as merged entries (null values skipped)."""
        cdef OMap* m = <OMap*>self.merged
        cdef Py_ssize_t pos = 0, kn
        cdef PyObject* key
        cdef PyObject* value
        cdef const char* kp
        cdef int i
        while PyDict_Next(data, &pos, &key, &value):
            if <object>value is None:
                continue
            kp = PyUnicode_AsUTF8AndSize(<object>key, &kn)
            i = _omap_put(m, kp, kn)
            m.e[i].v.obj = <void*>value
            m.e[i].v.has_text = False
            if type(<object>value) is str:
                m.e[i].v.p = PyUnicode_AsUTF8AndSize(<object>value, &m.e[i].v.n)
                m.e[i].v.has_text = True
        return 0

    cdef int _nested_params(self, dict data) except -1:
        """A JSON "params" object contributes its pairs first."""
        cdef object nested = data.get("params")
        cdef Py_ssize_t pos = 0, kn
        cdef PyObject* key
        cdef PyObject* value
        cdef Val v
        cdef const char* kp
        if type(nested) is not dict:
            return 0
        while PyDict_Next(<dict>nested, &pos, &key, &value):
            if <object>value is None:
                continue
            kp = PyUnicode_AsUTF8AndSize(<object>key, &kn)
            v.obj, v.has_text = <void*>value, False
            self._param(kp, kn, &v)
        self.keep.append(nested)
        return 0

    cdef int _emit(self, Buf* out, dict data, str ip, bytes user_agent,
                   bytes accept_language, bytes cookie_vid, int64_t now_ms,
                   object ids, Outcome* res) except -1:
        cdef OMap* merged = <OMap*>self.merged
        cdef OMap* params = <OMap*>self.params
        cdef Val cols[NTAGS + 1]
        cdef Val lat_v, lon_v, w_v, h_v, first_v
        cdef Val utm[5]
        cdef bint has_lat = False, has_lon = False, has_w = False, has_h = False
        cdef bint has_first = False
        cdef bint has_utm[5]
        cdef bint has_vid = False, has_sid = False, ok_lat, ok_lon
        cdef uint8_t eid[16]
        cdef uint8_t vid[16]
        cdef uint8_t sid[16]
        cdef int i, code, kind, tag, u, flags = 0
        cdef int64_t duration = 0, w = 0, h = 0
        cdef double score = 0.0, lat = 0.0, lon = 0.0
        cdef bint has_duration = False, has_score = False
        cdef Py_ssize_t start
        cdef Entry* e
        cdef Val* v
        cdef bytes text_b
        memset(cols, 0, sizeof(cols))
        memset(&first_v, 0, sizeof(first_v))
        memset(has_utm, 0, sizeof(has_utm))
        if data is not None:
            self._nested_params(data)
            self._entries_from(data)

        # Every merged key, in input order (parse_ref step 3).
        for i in range(merged.n):
            e = &merged.e[i]
            code = _classify(e.kp, e.kn)
            kind = code & 0xFF
            v = &e.v
            if kind == K_TEXT:
                self._text(v)
                tag = code >> 8
                if self.url_filter is not None and (tag == T_URL or tag == T_LAST):
                    self._filtered(v)
                cols[tag] = v[0]
            elif kind == K_UNKNOWN:
                self._param(e.kp, e.kn, v)
            elif kind == K_VID or kind == K_SID:
                if v.obj != NULL and type(<object>v.obj) is not str:
                    self._param(e.kp, e.kn, v)
                elif kind == K_VID and _uuid_bytes(v.p, v.n, vid):
                    has_vid = True
                elif kind == K_SID and _uuid_bytes(v.p, v.n, sid):
                    has_sid = True
                else:
                    self._param(e.kp, e.kn, v)
            elif kind == K_DURATION:
                if self._duration(v, &duration):
                    has_duration = True
                else:
                    self._param(e.kp, e.kn, v)
            elif kind == K_SCORE:
                if self._float(v, &score):
                    has_score = True
                else:
                    self._param(e.kp, e.kn, v)
            elif kind == K_LAT:
                lat_v, has_lat = v[0], True
            elif kind == K_LON:
                lon_v, has_lon = v[0], True
            elif kind == K_W:
                w_v, has_w = v[0], True
            elif kind == K_H:
                h_v, has_h = v[0], True
            elif kind == K_FIRST:
                self._text(v)
                first_v, has_first = v[0], True
            elif kind == K_PARAMS:
                if v.obj == NULL or type(<object>v.obj) is not dict:
                    self._param(e.kp, e.kn, v)
            else:   # K_UTM: which one is the 7th/9th/... byte's business
                self._text(v)
                u = _utm_index(e.kp, e.kn)
                utm[u], has_utm[u] = v[0], True

        # UTM: an explicit (non-null) key wins over its utm_ key.
        for u in range(5):
            if has_utm[u] and not self._present(data, _UTM[u][1], _UTM[u][3]):
                if u == 4:
                    self._param(b"content", 7, &utm[u])
                else:
                    cols[<int>_UTM[u][2]] = utm[u]

        # Pairs that only make a column together.
        if has_lat or has_lon:
            ok_lat = has_lat and self._float(&lat_v, &lat)
            ok_lon = has_lon and self._float(&lon_v, &lon)
            if ok_lat and ok_lon and -90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0:
                flags |= F_LATLON
            else:
                if has_lat:
                    self._param(b"lat", 3, &lat_v)
                if has_lon:
                    self._param(b"lon", 3, &lon_v)
        if has_w or has_h:
            if has_w and has_h and self._size(&w_v, &w) and self._size(&h_v, &h):
                flags |= F_VP
            else:
                if has_w:
                    self._param(b"w", 1, &w_v)
                if has_h:
                    self._param(b"h", 1, &h_v)

        # Identity: eid, then vid, then sid (parse_ref step 6).
        _next_id(ids, eid)
        res.new_visitor = False
        if not has_vid:
            if cookie_vid is None or not _uuid_bytes(PyBytes_AS_STRING(cookie_vid),
                                                   PyBytes_GET_SIZE(cookie_vid), vid):
                _next_id(ids, vid)
                res.new_visitor = True
        if not has_sid:
            if res.new_visitor:
                memcpy(sid, vid, 16)
            else:
                _next_id(ids, sid)
        if res.new_visitor:
            flags |= F_NEW_VISITOR | F_FIRST
        elif not (has_first and first_v.n == 5 and memcmp(first_v.p, b"false", 5) == 0):
            flags |= F_FIRST
        memcpy(res.vid, vid, 16)

        # Server-derived columns.
        cols[T_IP].p = PyUnicode_AsUTF8AndSize(ip, &cols[T_IP].n)
        cols[T_IP].has_text = True
        if user_agent is not None:
            cols[T_BROWSER].p = self._utf8(PyBytes_AS_STRING(user_agent),
                                           PyBytes_GET_SIZE(user_agent), &cols[T_BROWSER].n)
            cols[T_BROWSER].has_text = True
        if accept_language is not None:
            self._culture(accept_language, &cols[T_CULTURE])

        # The record.
        if has_duration:
            flags |= F_DURATION
        if has_score:
            flags |= F_SCORE
        buf_reserve(out, HEAD_SIZE + 48)
        _put_u8(out, KIND_EVENT)
        _put_u8(out, <uint8_t>flags)
        _put(out, &now_ms, 8)
        _put(out, eid, 16)
        _put(out, vid, 16)
        _put(out, sid, 16)
        if flags & F_LATLON:
            _put(out, &lat, 8)
            _put(out, &lon, 8)
        if flags & F_VP:
            _put(out, &w, 8)
            _put(out, &h, 8)
        if flags & F_DURATION:
            _put(out, &duration, 8)
        if flags & F_SCORE:
            _put(out, &score, 8)
        for tag in range(1, NTAGS + 1):
            if cols[tag].has_text:
                buf_reserve(out, 1)
                _put_u8(out, <uint8_t>tag)
                _put_text(out, cols[tag].p, cols[tag].n)
        for i in range(params.n):
            e = &params.e[i]
            buf_reserve(out, 1)
            _put_u8(out, PARAM)
            _put_text(out, e.kp, e.kn)
            _put_text(out, e.v.p, e.v.n)

        # What the answer needs.
        i = _omap_get(params, b"redirect", 8)
        if i >= 0:
            res.redirect, res.redirect_len = params.e[i].v.p, params.e[i].v.n
        else:
            res.redirect, res.redirect_len = NULL, -1
        return 0

    cdef bint _present(self, dict data, str key, bytes key_bytes) except -1:
        """Did the request carry ``key`` with a (non-null) value?"""
        cdef PyObject* value
        if data is not None:
            value = PyDict_GetItem(data, key)
            return value != NULL and <object>value is not None
        return _omap_get(<OMap*>self.merged, PyBytes_AS_STRING(key_bytes),
                         PyBytes_GET_SIZE(key_bytes)) >= 0

    cdef int _culture(self, bytes raw, Val* out) except -1:
        """First Accept-Language tag, cut at ';', stripped (str.strip of the
        Latin-1 text), as UTF-8; absent when empty."""
        cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(raw)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(raw), a = 0, b = 0, i
        cdef str text
        while b < n and p[b] != b',' and p[b] != b';':
            b += 1
        while a < b and _latin1_space(p[a]):
            a += 1
        while b > a and _latin1_space(p[b - 1]):
            b -= 1
        if a == b:
            return 0
        for i in range(a, b):
            if p[i] >= 0x80:
                text = (<bytes>raw[a:b]).decode("latin-1")
                self.keep.append(text)
                out.p = PyUnicode_AsUTF8AndSize(text, &out.n)
                out.has_text = True
                return 0
        out.p, out.n, out.has_text = <const char*>p + a, b - a, True
        return 0


cdef inline bint _latin1_space(unsigned char c) noexcept:
    # str.isspace() over Latin-1: \t \n \v \f \r, \x1c-\x1f, space, \x85, \xa0
    return c == 32 or (9 <= c <= 13) or (28 <= c <= 31) or c == 0x85 or c == 0xA0


cdef int _utm_index(const char* k, Py_ssize_t n) noexcept:
    # utm_source utm_medium utm_campaign utm_term utm_content
    if n == 10 and k[4] == b's':
        return 0
    if n == 10 and k[4] == b'm':
        return 1
    if n == 12:
        return 2
    if n == 8:
        return 3
    return 4


cpdef object loads_body(bytes body):
    """The decoded JSON body, or ParseError with a short reason."""
    try:
        return _loads(body)
    except _JSONDecodeError as exc:
        raise ParseError("malformed JSON: " + str(exc)[:80]) from None


cdef dict _with_query(dict obj, bytes query):
    """Query pairs first, the body's keys over them (parse_ref rule 1)."""
    cdef dict data
    if not query:
        return obj
    data = {}
    for key, value in _query_dict(query).items():
        data[key] = value
    data.update(obj)
    return data


cdef dict _query_dict(bytes query):
    """Query pairs as a dict of str (POST bodies with a query: rare)."""
    cdef Encoder scratch = Encoder()
    cdef OMap* m
    cdef dict out = {}
    cdef int i
    scratch._arena_for(64 + 3 * PyBytes_GET_SIZE(query))
    scratch._query_pairs(query)
    m = <OMap*>scratch.merged
    for i in range(m.n):
        out[PyUnicode_DecodeUTF8(m.e[i].kp, m.e[i].kn, NULL)] = \
            PyUnicode_DecodeUTF8(m.e[i].v.p, m.e[i].v.n, NULL)
    return out


# ============================================================== Python API

def encode_track(path, query, body, ip, user_agent, accept_language, cookie_vid,
                 now_ms, ids, url_filter=None, Encoder encoder=None):
    """The record (bytes) of one track request, from the request's raw parts:
    ``user_agent`` and ``accept_language`` are the header bytes (or None),
    ``cookie_vid`` the raw value of the ``vid`` cookie (bytes or None)."""
    cdef Buf out
    cdef Outcome res
    if encoder is None:
        encoder = Encoder(url_filter)
    out.data, out.len, out.cap = NULL, 0, 0
    try:
        encoder.encode(&out, path, query, body, ip, user_agent, accept_language,
                       cookie_vid, now_ms, ids, &res)
        return PyBytes_FromStringAndSize(out.data, out.len)
    finally:
        buf_free(&out)


def encode_batch(path, query, body, ip, user_agent, accept_language, cookie_vid,
                 now_ms, ids, url_filter=None, Encoder encoder=None, max_events=1000):
    """The records (a list of bytes) of a batch: a JSON array body, one event
    per element (rules: parse_ref.encode_batch). All or nothing: ParseError
    naming the element's index; BatchTooLarge past ``max_events``."""
    cdef Buf out
    cdef Outcome res
    cdef list records = []
    cdef Py_ssize_t start
    if encoder is None:
        encoder = Encoder(url_filter)
    items = batch_items(body, max_events)
    out.data, out.len, out.cap = NULL, 0, 0
    try:
        for i, item in enumerate(items):
            start = out.len
            encoder.encode_batch_item(&out, i, item, query, ip, user_agent, accept_language,
                                      cookie_vid, now_ms, ids, &res)
            records.append(PyBytes_FromStringAndSize(out.data + start, out.len - start))
            if res.new_visitor:           # the rest of the batch is this visitor's
                cookie_vid = _uuid_str(res.vid).encode()
        return records
    finally:
        buf_free(&out)


class BatchTooLarge(ParseError):
    """A batch over MaxBatchEvents (answered 413)."""


def batch_items(body, max_events):
    """The elements of a JSON array body (ParseError, BatchTooLarge)."""
    items = loads_body(body) if type(body) is bytes else body
    if type(items) is not list:
        raise ParseError("batch body must be a JSON array")
    if not items:
        raise ParseError("batch body must hold at least one event")
    if len(items) > max_events:
        raise BatchTooLarge("batch of %d events, over MaxBatchEvents (%d)"
                            % (len(items), max_events))
    return items


def bench_encode(int n, path, query, body, ip, user_agent, accept_language, cookie_vid,
                 now_ms, ids, Encoder encoder):
    """``n`` encodes into one reused buffer, as the request path runs them
    (loadtest/bench_parse.py): the parser's own cost, no Python call per request."""
    cdef Buf out
    cdef Outcome res
    cdef int i
    out.data, out.len, out.cap = NULL, 0, 0
    try:
        for i in range(n):
            out.len = 0
            encoder.encode(&out, path, query, body, ip, user_agent, accept_language,
                           cookie_vid, now_ms, ids, &res)
        return out.len
    finally:
        buf_free(&out)


def parse_track(path, query, body, ip, user_agent, accept_language, cookie_vid,
                now_ms, ids, url_filter):
    """parse_ref.parse_track's API (str headers) through the record: the event
    dict a store reads back. For tests, benchmarks and the pure-Python app."""
    # A lone surrogate cannot come from a request (headers are bytes): it is
    # replaced by "?", as parse_ref's bhash sees it.
    ua = None if user_agent is None else user_agent.encode("utf-8", "replace")
    lang = None if accept_language is None else accept_language.encode("latin-1", "replace")
    cookie = None
    if cookie_vid is not None and cookie_vid.isascii():
        cookie = cookie_vid.encode("ascii")
    return decode(encode_track(path, query, body, ip, ua, lang, cookie, now_ms, ids,
                               url_filter))


# ============================================================== decoding

cdef tuple _TAG_NAMES = ("", "ip", "uid", "app", "last", "url", "ptype", "auth", "xid",
                         "split", "ename", "etyp", "ver", "sink", "targets", "source",
                         "medium", "campaign", "term", "ref", "aff", "browser", "device",
                         "os", "tz", "outcome", "username", "culture")


cdef inline Py_ssize_t _varint_at(const unsigned char* p, Py_ssize_t i, Py_ssize_t n,
                                  Py_ssize_t* out) except -1:
    cdef uint64_t v = 0
    cdef int shift = 0
    while True:
        if i >= n or shift > 28:
            raise ValueError("bad record: truncated or oversized length")
        v |= <uint64_t>(p[i] & 0x7F) << shift
        i += 1
        if p[i - 1] < 0x80:
            out[0] = <Py_ssize_t>v
            return i
        shift += 7


cdef str _bhash(const char* p, Py_ssize_t n):
    cdef uint32_t h
    cdef char out[8]
    cdef int k = 8
    h = _fnv32(p, n)
    if h == 0:
        return "0"
    while h:
        k -= 1
        out[k] = _B36[h % 36]
        h //= 36
    return PyUnicode_DecodeASCII(out + k, 8 - k, NULL)


def decode(record):
    """The event dict of a record (engine.record.decode, compiled)."""
    cdef const unsigned char[::1] view = record
    cdef const unsigned char* p = &view[0] if view.shape[0] else NULL
    cdef Py_ssize_t n = view.shape[0], i = HEAD_SIZE, ln, kn
    cdef int flags, tag, last_tag = 0
    cdef int64_t created, vp_w = 0, vp_h = 0, duration = 0
    cdef double lat = 0, lon = 0, score = 0
    cdef list pair
    cdef dict event, params = {}
    cdef str key, browser_text = None
    cdef const char* browser = NULL
    cdef Py_ssize_t browser_n = 0
    cdef object tz = None
    if n < HEAD_SIZE or p[0] != KIND_EVENT:
        raise ValueError("bad record: short or of an unknown kind")
    flags = p[1]
    memcpy(&created, p + 2, 8)
    event = {"eid": _uuid_str(p + 10), "vid": _uuid_str(p + 26), "sid": _uuid_str(p + 42),
             "created": created, "first": bool(flags & F_FIRST)}
    # The numbers come first in the record but go into the event after its
    # texts (the key order of engine.record.decode): read here, put in below.
    if flags & F_LATLON:
        if i + 16 > n:
            raise ValueError("bad record: ends inside latlon")
        memcpy(&lat, p + i, 8)
        memcpy(&lon, p + i + 8, 8)
        i += 16
    if flags & F_VP:
        if i + 16 > n:
            raise ValueError("bad record: ends inside vp")
        memcpy(&vp_w, p + i, 8)
        memcpy(&vp_h, p + i + 8, 8)
        i += 16
    if flags & F_DURATION:
        if i + 8 > n:
            raise ValueError("bad record: ends inside duration")
        memcpy(&duration, p + i, 8)
        i += 8
    if flags & F_SCORE:
        if i + 8 > n:
            raise ValueError("bad record: ends inside score")
        memcpy(&score, p + i, 8)
        i += 8
    while i < n:
        tag = p[i]
        i += 1
        if tag == PARAM:
            i = _varint_at(p, i, n, &kn)
            if i + kn > n:
                raise ValueError("bad record: text past the end")
            key = PyUnicode_DecodeUTF8(<const char*>p + i, kn, "surrogatepass")
            i = _varint_at(p, i + kn, n, &ln)
            if i + ln > n:
                raise ValueError("bad record: text past the end")
            params[key] = PyUnicode_DecodeUTF8(<const char*>p + i, ln, "surrogatepass")
            i += ln
        elif 0 < tag <= NTAGS and tag > last_tag and not params:
            i = _varint_at(p, i, n, &ln)
            if i + ln > n:
                raise ValueError("bad record: text past the end")
            event[_TAG_NAMES[tag]] = PyUnicode_DecodeUTF8(<const char*>p + i, ln,
                                                          "surrogatepass")
            if tag == T_BROWSER:
                browser, browser_n = <const char*>p + i, ln
            i += ln
            last_tag = tag
        else:
            raise ValueError("bad record: field tag %d at byte %d" % (tag, i - 1))
    if flags & F_LATLON:
        pair = [lat, lon]
        PyObject_GC_UnTrack(<void*>pair)        # untracked with the event (below)
        event["latlon"] = pair
    if flags & F_VP:
        pair = [vp_w, vp_h]
        PyObject_GC_UnTrack(<void*>pair)
        event["vp"] = pair
    if flags & F_DURATION:
        event["duration"] = duration
    if flags & F_SCORE:
        event["score"] = score
    if browser != NULL:
        if _utf8_valid(<const unsigned char*>browser, browser_n):
            event["bhash"] = _bhash(browser, browser_n)
        else:   # a lone surrogate (never from a request): hash as parse_ref does
            text_b = event["browser"].encode("utf-8", "replace")
            event["bhash"] = _bhash(PyBytes_AS_STRING(text_b), PyBytes_GET_SIZE(text_b))
    tz = event.get("tz")
    if tz is not None:
        tz = _ZONES.get(tz)
        if tz is not None:
            event["country"] = tz
    if flags & F_NEW_VISITOR:
        event["new_visitor"] = True
    event["params"] = params
    # An event holds texts, numbers, a dict of texts and lists of two numbers:
    # nothing can make a cycle through it, but CPython tracks any dict that
    # holds a dict or list, so every young collection in a store process
    # would walk each batched event. Reference counting still frees them;
    # inserting a container later tracks the dict again.
    PyObject_GC_UnTrack(<void*>event)
    return event
