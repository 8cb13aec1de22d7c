# C-level interface of the compiled connection (engine/http/_connection.pyx):
# what the compiled tracking routes (engine/ingest/_track.pyx) and the spool
# writer (engine/ingest/_spool.pyx) see of it.
from libc.stdint cimport int64_t, uint64_t


cdef class HttpConnection


cdef class Ticket:
    """A spool group's outcome, as the answers waiting for it see it: the
    spool writer hands one out per group and settles it once the group is
    durable (or failed); connections whose next answer waits on it are
    released then."""
    cdef public bint settled
    cdef public bint failed
    cdef list waiters
    cdef list callbacks
    cdef int wait(self, HttpConnection conn) except -1
    cpdef settle(self, bint ok)


cdef class FastRoutes:
    """Routes answered wholly in compiled code (the tracking routes)."""
    cdef int claim(self, HttpConnection conn) except -1
    cdef int answer(self, HttpConnection conn, bint keep) except -1


cdef class ConnectionRegistry:
    cdef public object limits
    cdef public set open
    cdef public set streams
    cdef public bint draining           # set by the worker's drain: new connections close early
    cdef public double clock
    cdef public object date
    cdef public double idle_timeout
    cdef public double read_timeout
    cdef public double write_timeout
    cdef public Py_ssize_t max_header_bytes
    cdef public Py_ssize_t max_body_bytes
    cdef public Py_ssize_t accepted     # connections made since the last drain_accepted


cdef class HttpConnection:
    cdef public object app
    cdef public ConnectionRegistry registry
    cdef public object limits
    cdef public bint tls
    cdef public object transport
    cdef public object parser
    cdef public object request          # Request of a slow-path request being read
    cdef public str client_ip
    cdef public int state
    cdef public double deadline
    cdef public bint closing
    cdef public bint counted
    cdef public object pending           # deque of (ticket or None, answer, keep)
    cdef public bint read_paused
    cdef public object tunnel_to
    cdef public bint parser_done
    cdef public bint read_eof
    cdef public double write_paused_at
    cdef FastRoutes fast                 # the app's compiled routes, or None
    cdef Ticket waiting_on               # the ticket this connection is listed on
    # ---- the request being read on the fast path (reset per request) ----
    cdef bint decided                    # the request line is complete: fast or slow
    cdef public bint upgrade
    cdef public bint is_fast             # this request is answered by ``fast``
    cdef public int route                # which fast route (FastRoutes.claim)
    cdef public bytes url
    cdef public bytes method
    cdef public Py_ssize_t head_bytes
    cdef public int hosts                # Host field lines seen
    cdef public bytes authority          # of an absolute-form target (wins over Host)
    cdef public bytes user_agent
    cdef public bytes accept_language
    cdef public bytes cookie
    cdef public bytes origin
    cdef public bytes forwarded_for
    cdef public bytes forwarded
    cdef public bytes content_length
    cdef public bytes content_encoding
    cdef public bytes expect
    cdef public bytes dnt
    cdef public bytes gpc
    cdef public list body
    cdef public Py_ssize_t body_size
    cdef public bint keep_alive
    cdef public bint http_10

    cdef int answer_c(self, Ticket ticket, object answer, bint keep) except -1
    cdef int release_c(self) except -1
    cdef int _decide(self) except -1
    cdef int _fast_header(self, bytes name, bytes value) except -1
    cdef int _keep_header(self, const char* k, Py_ssize_t n, bytes value, const char* v,
                          Py_ssize_t vn) except -1
    cdef int _slow_header(self, bytes name, bytes value) except -1
    cdef public bint scan                # scan plain requests to the fast routes in C
    cdef Py_ssize_t _scan(self, bytes data) except -1
    cdef Py_ssize_t _scan_one(self, bytes data, const char* p, Py_ssize_t n) except -1
    cdef int _scan_header(self, bytes data, const char* p, Py_ssize_t name,
                          Py_ssize_t name_len, Py_ssize_t v0, Py_ssize_t v1) except -2
    cdef int _answer_scanned(self) except -1
    cdef void _reset_request(self) noexcept
    cdef int _drop_pending(self) except -1
    cdef int _check_host(self, bint http_10) except -1
    cdef int _check_body_head(self, object length, object expect) except -1
