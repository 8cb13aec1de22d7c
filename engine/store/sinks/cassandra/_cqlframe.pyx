# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""CQL native protocol v4 frames for the sink's writes, built in C.

The native wire (wire_native.py) sends a plan's requests as EXECUTE (one
write) or BATCH (several writes to one partition) frames of prepared
statements; this module turns a Request into the frame's bytes, values
encoded as the statement's prepared metadata says, and computes Cassandra's
Murmur3 token of a routing key. Nothing here does I/O.

Value types are those of PREPARE's metadata: an int (the option id) for a
native type, or a tuple for a collection or user type:
("map", key_type, value_type), ("list"|"set", element_type),
("udt"|"tuple", (field_type, ...)).
"""
from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Malloc, PyMem_Realloc, PyMem_Free
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

from engine._uuidtext cimport uuid_from_text
from engine.store.sinks.cassandra.plan cimport Request, Write

cdef enum:
    T_CUSTOM = 0x0000
    T_ASCII = 0x0001
    T_BIGINT = 0x0002
    T_BLOB = 0x0003
    T_BOOLEAN = 0x0004
    T_COUNTER = 0x0005
    T_DOUBLE = 0x0007
    T_FLOAT = 0x0008
    T_INT = 0x0009
    T_TIMESTAMP = 0x000B
    T_UUID = 0x000C
    T_VARCHAR = 0x000D
    T_TIMEUUID = 0x000F
    T_DATE = 0x0011
    T_SMALLINT = 0x0013
    T_TINYINT = 0x0014

OP_EXECUTE = 0x0A
OP_BATCH = 0x0D
BATCH_UNLOGGED = 1
BATCH_COUNTER = 2
FLAG_VALUES = 0x01
FLAG_SKIP_METADATA = 0x02
FLAG_SERIAL = 0x10


class CqlValueError(ValueError):
    """A value the statement's column type cannot take (a bug in the plan,
    reported per request: nothing was sent)."""


cdef class Prepared:
    """A prepared statement as this wire binds it: its id, its columns'
    types, which of them make the partition key (for routing)."""
    cdef public bytes id
    cdef public tuple types
    cdef public tuple pk
    cdef public Py_ssize_t ncols

    def __init__(self, bytes id, tuple types, tuple pk):
        self.id, self.types, self.pk = id, types, pk
        self.ncols = len(types)


cdef class Buf:
    """A growable byte buffer with big-endian writers (the protocol's order)."""
    cdef char *p
    cdef Py_ssize_t n, cap

    def __cinit__(self, Py_ssize_t cap=16384):
        self.cap = cap
        self.n = 0
        self.p = <char *> PyMem_Malloc(self.cap)
        if self.p == NULL:
            raise MemoryError()

    def __dealloc__(self):
        PyMem_Free(self.p)

    cdef int need(self, Py_ssize_t k) except -1:
        cdef Py_ssize_t cap = self.cap
        cdef char *q
        if self.n + k <= cap:
            return 0
        while self.n + k > cap:
            cap *= 2
        q = <char *> PyMem_Realloc(self.p, cap)
        if q == NULL:
            raise MemoryError()
        self.p, self.cap = q, cap
        return 0

    cdef inline int u8(self, int v) except -1:
        self.need(1)
        self.p[self.n] = <char> (v & 0xFF)
        self.n += 1
        return 0

    cdef inline int i16(self, int v) except -1:
        self.need(2)
        self.p[self.n] = <char> ((v >> 8) & 0xFF)
        self.p[self.n + 1] = <char> (v & 0xFF)
        self.n += 2
        return 0

    cdef inline int i32(self, int32_t v) except -1:
        self.need(4)
        put32(self.p + self.n, <uint32_t> v)
        self.n += 4
        return 0

    cdef inline int i64(self, int64_t v) except -1:
        cdef uint64_t u = <uint64_t> v
        self.need(8)
        put32(self.p + self.n, <uint32_t> (u >> 32))
        put32(self.p + self.n + 4, <uint32_t> (u & 0xFFFFFFFF))
        self.n += 8
        return 0

    cdef inline int raw(self, const char *s, Py_ssize_t k) except -1:
        self.need(k)
        memcpy(self.p + self.n, s, k)
        self.n += k
        return 0

    cdef bytes take(self):
        out = PyBytes_FromStringAndSize(self.p, self.n)
        self.n = 0
        return out


cdef inline void put32(char *at, uint32_t v) noexcept:
    at[0] = <char> ((v >> 24) & 0xFF)
    at[1] = <char> ((v >> 16) & 0xFF)
    at[2] = <char> ((v >> 8) & 0xFF)
    at[3] = <char> (v & 0xFF)


cdef int put_text(Buf b, object v) except -1:
    cdef Py_ssize_t k
    cdef const char *s
    if type(v) is not str:
        if isinstance(v, bytes):
            b.i32(<int32_t> PyBytes_GET_SIZE(v))
            return b.raw(PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v))
        v = str(v)
    s = PyUnicode_AsUTF8AndSize(v, &k)
    b.i32(<int32_t> k)
    return b.raw(s, k)


cdef extern from "Python.h":
    # PyUnicode_AsUTF8AndSize without Cython's exception check (put_uuid
    # turns a NULL into its own error; a try block costs more than the parse)
    const char *_utf8_or_null "PyUnicode_AsUTF8AndSize" (object, Py_ssize_t *)
    void PyErr_Clear()


cdef int put_uuid(Buf b, object v) except -1:
    """A uuid from its text (what the plan carries: engine/_uuidtext.pxd
    says which), 16 bytes, or a uuid.UUID. The text is read as UTF-8, which
    an ASCII str holds already (no copy): ~15-20 of them per event."""
    cdef const unsigned char *s
    cdef Py_ssize_t n
    cdef unsigned char out[16]
    if isinstance(v, bytes) and PyBytes_GET_SIZE(v) == 16:
        b.i32(16)
        return b.raw(PyBytes_AS_STRING(v), 16)
    if type(v) is not str:
        if hasattr(v, "bytes"):
            return put_uuid(b, v.bytes)
        raise CqlValueError(f"not a uuid: {v!r}")
    s = <const unsigned char *> _utf8_or_null(v, &n)
    if s == NULL:                       # lone surrogates: no UTF-8
        PyErr_Clear()
        raise CqlValueError(f"not a uuid: {v!r}")
    if not uuid_from_text(s, n, out):
        raise CqlValueError(f"not a uuid: {v!r}")
    b.i32(16)
    return b.raw(<char *> out, 16)


cdef int put_double(Buf b, double d) except -1:
    cdef uint64_t u
    memcpy(&u, &d, 8)
    b.i32(8)
    return b.i64(<int64_t> u)


cdef int put_float(Buf b, float f) except -1:
    cdef uint32_t u
    memcpy(&u, &f, 4)
    b.i32(4)
    return b.i32(<int32_t> u)


cdef int put_value(Buf b, object t, object v) except -1:
    """[int length][bytes] of ``v`` as type ``t``; None is null (-1)."""
    cdef int code
    cdef Py_ssize_t at
    if v is None:
        return b.i32(-1)
    if type(t) is int:
        code = <int> t
        if code == T_VARCHAR or code == T_ASCII:
            return put_text(b, v)
        if code == T_BIGINT or code == T_COUNTER or code == T_TIMESTAMP:
            b.i32(8)
            return b.i64(<int64_t> v)
        if code == T_INT:
            b.i32(4)
            return b.i32(<int32_t> v)
        if code == T_UUID or code == T_TIMEUUID:
            return put_uuid(b, v)
        if code == T_DOUBLE:
            return put_double(b, <double> v)
        if code == T_BOOLEAN:
            b.i32(1)
            return b.u8(1 if v else 0)
        if code == T_DATE:             # days since the epoch, centred on 2^31
            b.i32(4)
            return b.i32(<int32_t> (<uint32_t> (<int64_t> v + 2147483648)))
        if code == T_FLOAT:
            return put_float(b, <float> v)
        if code == T_SMALLINT:
            b.i32(2)
            return b.i16(<int> v)
        if code == T_TINYINT:
            b.i32(1)
            return b.u8(<int> v)
        if code == T_BLOB:
            if not isinstance(v, bytes):
                v = bytes(v)
            b.i32(<int32_t> PyBytes_GET_SIZE(v))
            return b.raw(PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v))
        raise CqlValueError(f"CQL type 0x{code:04x} is not bound by this wire")
    at = b.n
    b.i32(0)                        # the length, set below
    kind = t[0]
    if kind == "map":
        b.i32(<int32_t> len(v))
        for k, x in v.items():
            put_value(b, t[1], k)
            put_value(b, t[2], x)
    elif kind == "list" or kind == "set":
        b.i32(<int32_t> len(v))
        for x in v:
            put_value(b, t[1], x)
    else:                           # udt or tuple: the fields in order
        fields = t[1]
        if len(v) > len(fields):
            raise CqlValueError(f"{len(v)} values for a {kind} of {len(fields)} fields")
        for i in range(len(v)):
            put_value(b, fields[i], v[i])
    put32(b.p + at, <uint32_t> (b.n - at - 4))
    return 0


cdef int put_values(Buf b, Prepared p, Write w) except -1:
    """[short n][value]* of one write: every column, unset (-2) where a
    sparse write sets nothing."""
    cdef Py_ssize_t i, n = p.ncols
    cdef tuple types = p.types
    cdef list values
    b.i16(<int> n)
    if w.sparse:
        values = [_UNSET] * n
        for i, v in w.values:
            values[i] = v
        for i in range(n):
            v = values[i]
            if v is _UNSET:
                b.i32(-2)
            else:
                put_value(b, types[i], v)
        return 0
    values = w.values
    if len(values) != n:
        raise CqlValueError(f"{w.table}: {len(values)} values for {n} columns")
    for i in range(n):
        put_value(b, types[i], values[i])
    return 0


cdef object _UNSET = object()
cdef Buf _buf = Buf()


cdef int put_head(Buf b, int stream, int opcode) except -1:
    """A v4 request header; its body length is set by ``finish``."""
    b.n = 0
    b.u8(4)
    b.u8(0)
    b.i16(stream)
    b.u8(opcode)
    return b.i32(0)


cdef bytes finish(Buf b):
    put32(b.p + 5, <uint32_t> (b.n - 9))
    return b.take()


cdef int put_id(Buf b, bytes id) except -1:
    """[short bytes] of a prepared statement's id."""
    b.i16(<int> PyBytes_GET_SIZE(id))
    return b.raw(PyBytes_AS_STRING(id), PyBytes_GET_SIZE(id))


def frame(int stream, Request request, dict prepared, int consistency, int serial):
    """The whole frame (header and body) of ``request`` on ``stream``: an
    EXECUTE for one write, else a BATCH (COUNTER for counter requests,
    UNLOGGED otherwise: every write of a request is in one partition)."""
    cdef Buf b = _buf
    cdef list writes = request.writes
    cdef Write w
    cdef Prepared p
    cdef int flags = FLAG_SERIAL if request.conditional else 0
    try:
        if len(writes) == 1:
            w = writes[0]
            p = prepared[w.table]
            put_head(b, stream, OP_EXECUTE)
            put_id(b, p.id)
            b.i16(consistency)
            b.u8(flags | FLAG_VALUES | FLAG_SKIP_METADATA)
            put_values(b, p, w)
        else:
            put_head(b, stream, OP_BATCH)
            b.u8(BATCH_COUNTER if request.counter else BATCH_UNLOGGED)
            b.i16(<int> len(writes))
            for w in writes:
                p = prepared[w.table]
                b.u8(1)                     # a prepared statement
                put_id(b, p.id)
                put_values(b, p, w)
            b.i16(consistency)
            b.u8(flags)
        if flags:
            b.i16(serial)
    except BaseException:
        b.n = 0
        raise
    return finish(b)


def routing_key(Prepared p, Write w):
    """The partition key's bytes as Cassandra hashes them: the value itself
    for one column, else each as [short length][bytes][0]."""
    values = w.values
    if w.sparse:
        values = [None] * p.ncols
        for i, v in w.values:
            values[i] = v
    parts = []
    for i in p.pk:
        b = Buf(64)
        put_value(b, p.types[i], values[i])
        parts.append(b.take()[4:])
    if len(parts) == 1:
        return parts[0]
    return b"".join(len(x).to_bytes(2, "big") + x + b"\x00" for x in parts)


cdef inline uint64_t rotl(uint64_t x, int r) noexcept:
    return (x << r) | (x >> (64 - r))


cdef inline uint64_t fmix(uint64_t k) noexcept:
    k ^= k >> 33
    k *= <uint64_t> 0xff51afd7ed558ccd
    k ^= k >> 33
    k *= <uint64_t> 0xc4ceb9fe1a85ec53
    k ^= k >> 33
    return k


cdef inline uint64_t block(const uint8_t *d) noexcept:
    cdef uint64_t v = 0
    cdef int i
    for i in range(7, -1, -1):
        v = (v << 8) | d[i]
    return v


def token(bytes key):
    """Cassandra's Murmur3Partitioner token of ``key``: MurmurHash3 x64 128,
    seed 0, the first half as a signed 64-bit number, with Cassandra's quirk of
    sign-extending the tail's bytes, and its minimum mapped to the maximum."""
    cdef const uint8_t *d = <const uint8_t *> PyBytes_AS_STRING(key)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(key), nblocks = n // 16, i
    cdef uint64_t h1 = 0, h2 = 0, k1, k2
    cdef uint64_t c1 = <uint64_t> 0x87c37b91114253d5, c2 = <uint64_t> 0x4cf5ad432745937f
    cdef const uint8_t *tail
    cdef int64_t t
    for i in range(nblocks):
        k1 = block(d + i * 16)
        k2 = block(d + i * 16 + 8)
        k1 *= c1; k1 = rotl(k1, 31); k1 *= c2; h1 ^= k1
        h1 = rotl(h1, 27); h1 += h2; h1 = h1 * 5 + 0x52dce729
        k2 *= c2; k2 = rotl(k2, 33); k2 *= c1; h2 ^= k2
        h2 = rotl(h2, 31); h2 += h1; h2 = h2 * 5 + 0x38495ab5
    tail = d + nblocks * 16
    k1 = 0
    k2 = 0
    for i in range((n & 15) - 1, 7, -1):
        k2 ^= (<uint64_t> <int64_t> <signed char> tail[i]) << ((i - 8) * 8)
    if (n & 15) > 8:
        k2 *= c2; k2 = rotl(k2, 33); k2 *= c1; h2 ^= k2
    for i in range(min(n & 15, 8) - 1, -1, -1):
        k1 ^= (<uint64_t> <int64_t> <signed char> tail[i]) << (i * 8)
    if (n & 15) > 0:
        k1 *= c1; k1 = rotl(k1, 31); k1 *= c2; h1 ^= k1
    h1 ^= <uint64_t> n
    h2 ^= <uint64_t> n
    h1 += h2
    h2 += h1
    h1 = fmix(h1)
    h2 = fmix(h2)
    h1 += h2
    t = <int64_t> h1
    if t == -9223372036854775807 - 1:
        return 9223372036854775807
    return t


def select_frame(int stream, Prepared p, list values, int consistency):
    """An EXECUTE of a prepared SELECT: its rows come with their metadata."""
    cdef Buf b = Buf(256)
    put_head(b, stream, OP_EXECUTE)
    put_id(b, p.id)
    b.i16(consistency)
    b.u8(FLAG_VALUES)
    put_values(b, p, Write(None, values, 0))
    return finish(b)


cdef bytes _VOID = b"\x00\x00\x00\x01"


def dispatch(bytearray inbox, dict handlers, list free, conn):
    """Hand every whole frame at the start of ``inbox`` to its request's
    handler (``handler[0].answer(handler[1], opcode, body)``, native_conn.py);
    the bytes consumed. A write's usual answer, RESULT Void, shares one body."""
    cdef Py_ssize_t at = 0, n = len(inbox)
    cdef const uint8_t *p = <const uint8_t *> PyByteArray_AS_STRING(inbox)
    cdef int flags, stream, opcode
    cdef Py_ssize_t length
    while n - at >= 9:
        flags = p[at + 1]
        stream = <int16_t> ((p[at + 2] << 8) | p[at + 3])
        opcode = p[at + 4]
        length = (<Py_ssize_t> p[at + 5] << 24) | (p[at + 6] << 16) | (p[at + 7] << 8) | p[at + 8]
        if n - at - 9 < length:
            break
        if opcode == 8 and length == 4 and p[at + 12] == 1 and p[at + 11] == 0:
            body = _VOID
        else:
            body = PyBytes_FromStringAndSize(<const char *> p + at + 9, length)
        at += 9 + length
        if flags:
            body = conn.strip(flags, body)
        if stream < 0:
            continue                     # a server event
        handler = handlers.pop(stream, None)
        if handler is None:
            continue
        free.append(stream)
        try:
            handler[0].answer(handler[1], opcode, body)
        except Exception as exc:         # noqa: BLE001 - one answer must not stop the rest
            conn.answer_failed(exc)
    return at
