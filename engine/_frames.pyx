# cython: language_level=3, boundscheck=False, wraparound=False
"""Spool record framing for the store's reader, compiled (engine/spool.py has
the format and ``FileCursor._take``, the pure-Python twin).

A store process checks every record it reads: length within the readable
end, CRC-32 of seq and payload, seq increasing. Done per record in Python
that was a struct unpack, a memoryview slice, a zlib call and a tuple, about
as much CPU as decoding the record (py-spy of a draining store process).
zlib is declared here and linked by its run-time name, as the SQLite writer
links SQLite: a build needs no development headers.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_SIZE
from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memcpy

cdef extern from *:
    """
    unsigned long crc32(unsigned long crc, const unsigned char *buf, unsigned int len);
    """
    unsigned long crc32(unsigned long crc, const unsigned char *buf, unsigned int len) nogil

# take()'s state: the buffer ran out (or ``most`` was reached), the file is
# torn here, or the first record is bigger than the buffer (read it alone).
MORE = 0
TORN = 1
BIGGER = 2


def take(bytes buf, long long base, long long limit, Py_ssize_t most,
         unsigned long long seq, unsigned long long skip_to, list out):
    """Whole records from ``buf`` (read at file offset ``base``; the file is
    readable up to ``limit``), appended to ``out`` as (seq, payload, end
    offset) until it holds ``most``; records with seq <= ``skip_to`` are
    checked and skipped. ``seq`` is the last seq taken. Returns (bytes
    consumed, last seq, state, records skipped)."""
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(buf)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(buf), pos = 0, end, skipped = 0
    cdef uint32_t length, crc
    cdef uint64_t rseq
    cdef int state = MORE
    while pos + 16 <= n and PyList_GET_SIZE(out) < most:
        memcpy(&length, p + pos, 4)
        memcpy(&crc, p + pos + 4, 4)
        memcpy(&rseq, p + pos + 8, 8)
        end = pos + 16 + <Py_ssize_t>length
        if base + end > limit:
            state = TORN                     # runs past the readable end
            break
        if end > n:
            if pos == 0:
                state = BIGGER
            break
        if crc32(0, p + pos + 8, 8 + length) != crc or rseq <= seq:
            state = TORN
            break
        pos = end
        seq = rseq
        if rseq > skip_to:
            out.append((rseq, PyBytes_FromStringAndSize(<const char *>p + end - length, length),
                        base + end))
        else:
            skipped += 1
    return pos, seq, state, skipped
