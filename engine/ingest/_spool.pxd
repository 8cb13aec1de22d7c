from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from posix.types cimport pid_t

from engine._parse cimport Buf
from engine.http._connection cimport Ticket


cdef extern from "pthread.h" nogil:
    ctypedef struct pthread_t:
        pass
    ctypedef struct pthread_mutex_t:
        pass
    ctypedef struct pthread_cond_t:
        pass


cdef struct Shared:
    # What the loop and the committer thread share; ``mu`` guards the
    # hand-over fields (handed, go, stop, result, settled, pacing).
    pthread_mutex_t mu
    pthread_cond_t cv
    Buf handed            # the group being written (the thread's while busy)
    bint go               # a group was handed over
    bint stop             # the thread must exit once idle
    int result            # 0, or the errno of the last group's failed write
    uint64_t settled      # groups written (or failed) so far
    bint pacing           # the thread waits out the interval before the next group
    int64_t interval_ns   # CommitIntervalMs: at most one group started per interval
    int efd               # eventfd: the thread tells the loop a group settled
    int fd                # the spool file being written
    int dir_fd            # its directory (fsynced after a new file appears)
    int64_t size          # bytes of the file known durable
    int64_t zeroed        # bytes the file has: records, then zeros written ahead
    uint64_t file_no      # n of w<pid>-<n>.spool
    int64_t rotate_bytes
    bint durable          # fdatasync each group (spool) or not (memory)
    uint64_t* board       # the board slot's spool field, or NULL
    pid_t pid
    char tag[16]          # random per writer: pids come back (containers)
    char directory[4096]


cdef class SpoolWriter:
    cdef Shared* sh
    cdef pthread_t thread
    cdef bint thread_started
    cdef Buf open_group           # records appended since the last hand-over
    cdef Ticket open_ticket       # what the open group's answers wait on
    cdef Ticket handed_ticket     # the group with the committer thread
    cdef public uint64_t groups   # groups settled so far
    cdef public uint64_t seq
    cdef public bint busy         # a group is with the committer thread
    cdef Py_ssize_t handed_records
    cdef Py_ssize_t open_records
    cdef bint flush_scheduled     # the open group goes at the end of this loop pass
    cdef bint thread_ready        # the committer thread can take a group now
    cdef uint64_t handed_groups   # groups handed over so far
    cdef Py_ssize_t group_bytes   # hand over at once past this
    cdef object loop
    cdef object flush_cb
    cdef public int64_t max_bytes
    cdef public int64_t old_bytes   # bytes of this worker's older files still on disk
    cdef public object on_settled   # Python callback(ok, records) or None
    cdef public bint healthy

    cdef Py_ssize_t begin(self) except -1
    cdef Ticket finish(self, Py_ssize_t start)
    cdef void rollback(self, Py_ssize_t start) noexcept
    cdef int64_t bytes_used(self) noexcept
    cdef int _hand_over(self) except -1
    cdef int _answer_group(self, int result) except -1
