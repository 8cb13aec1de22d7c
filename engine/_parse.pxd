# C-level interface of the compiled parser (engine/_parse.pyx), for the
# compiled connection and spool writer to call without Python overhead.
cimport cython
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t


cdef struct Buf:
    char* data
    Py_ssize_t len
    Py_ssize_t cap


cdef int buf_reserve(Buf* b, Py_ssize_t extra) except -1
cdef void buf_free(Buf* b) noexcept


cdef struct Outcome:
    # What the answer needs from a parsed request.
    uint8_t vid[16]
    bint new_visitor
    const char* redirect       # the "redirect" parameter (UTF-8), valid until the next parse
                               # and while the request's path/query bytes live
    Py_ssize_t redirect_len    # -1 when absent


cdef struct Val:
    const char* p        # UTF-8 text of the value, when has_text
    Py_ssize_t n
    void* obj            # a JSON value (borrowed PyObject*), or NULL for a request's text
    bint has_text


cdef class TimeUUIDGen:
    cdef uint64_t _last
    cdef uint64_t _node
    cdef uint32_t _clock_seq
    cdef int64_t _frozen_ns
    cdef void next_bytes(self, uint8_t* out) noexcept


@cython.final
cdef class Encoder:
    cdef char* arena
    cdef Py_ssize_t arena_cap
    cdef Py_ssize_t arena_len
    cdef void* merged           # OMap of the request's pairs (GET)
    cdef void* params           # OMap of params
    cdef list keep              # Python objects whose UTF-8 the spans point into
    cdef object url_filter
    cdef int encode(self, Buf* out, bytes path, bytes query, bytes body, str ip,
                    bytes user_agent, bytes accept_language, bytes cookie_vid,
                    int64_t now_ms, object ids, Outcome* res) except -1
    cdef int _arena_for(self, Py_ssize_t n) except -1
    cdef const char* _decoded(self, const char* src, Py_ssize_t n, bint plus,
                              Py_ssize_t* out_n) except NULL
    cdef const char* _utf8(self, const char* p, Py_ssize_t n, Py_ssize_t* out_n) except NULL
    cdef int _path_pairs(self, bytes path) except -1
    cdef int _query_pairs(self, bytes query) except -1
    cdef int _text(self, Val* v) except -1
    cdef int _duration(self, Val* v, int64_t* out) except -1
    cdef int _float(self, Val* v, double* out) except -1
    cdef int _size(self, Val* v, int64_t* out) except -1
    cdef int _param(self, const char* kp, Py_ssize_t kn, Val* v) except -1
    cdef int _filtered(self, Val* v) except -1
    cdef dict _json(self, bytes body, bytes query)
    cdef int encode_object(self, Buf* out, dict obj, bytes query, str ip,
                           bytes user_agent, bytes accept_language, bytes cookie_vid,
                           int64_t now_ms, object ids, Outcome* res) except -1
    cdef int encode_batch_item(self, Buf* out, Py_ssize_t index, object item, bytes query,
                               str ip, bytes user_agent, bytes accept_language,
                               bytes cookie_vid, int64_t now_ms, object ids,
                               Outcome* res) except -1
    cdef int _entries_from(self, dict data) except -1
    cdef int _nested_params(self, dict data) except -1
    cdef int _emit(self, Buf* out, dict data, str ip, bytes user_agent,
                   bytes accept_language, bytes cookie_vid, int64_t now_ms,
                   object ids, Outcome* res) except -1
    cdef bint _present(self, dict data, str key, bytes key_bytes) except -1
    cdef int _culture(self, bytes raw, Val* out) except -1


cdef bytes cookie_vid_c(const char* p, Py_ssize_t n)


cpdef object loads_body(bytes body)
cdef str _uuid_str(const uint8_t* b)
