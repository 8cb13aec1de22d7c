# C-level interface of the shared limits (engine/limits/_bucket.pyx): the
# compiled tracking routes take tokens through ``allow`` without a Python call.
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t


ctypedef struct Bucket:
    uint32_t lock
    uint32_t unused
    uint64_t key
    int64_t tokens
    int64_t stamp_ns


cdef class SharedLimits:
    cdef object _map
    cdef uint8_t* _base
    cdef int64_t* _conns
    cdef Bucket* _globals
    cdef Bucket* _ips
    cdef uint32_t _mask
    cdef uint32_t _ip_slots

    cdef void _write_header(self)
    cpdef int allow(self, int cls, str ip, double ip_rate, double ip_burst,
                    double g_rate, double g_burst)
    cdef Bucket* _ip_bucket(self, int cls, str ip, double burst, int64_t now,
                            uint32_t me) noexcept
    cpdef int64_t conn_add(self, int slot, int64_t delta)
    cpdef int64_t conn_total(self)
