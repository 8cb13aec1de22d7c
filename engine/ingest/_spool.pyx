# cython: language_level=3, boundscheck=False, wraparound=False
"""The HTTP worker's spool writer: group commit with a committer thread (compiled).

The request path appends each record to the open group (``begin`` reserves
the frame, the parser writes the event record straight after it, ``finish``
fills in length, CRC and seq) and queues its answer with the group's
``Ticket`` (engine/http/_connection.pyx). The open group is handed to the
committer thread — a plain pthread that never takes the GIL — which
``write``s it and ``fdatasync``s the file (``durable``; "memory" durability
skips the sync), then tells the loop through an eventfd; the loop settles the
group's ticket, which releases every answer waiting on it (a failed write:
503s). One wake-up of the thread and one of the loop per group; no executor
future, lock or Python object per request.

When a group is handed over trades CPU for latency: an fdatasync costs tens
of µs of CPU on these machines whatever its size (~25-30 µs of the machine's
over zeros written ahead, ~40-45 appending; ``_zero_ahead``), and handing a
group over as soon as the previous one is durable makes groups of a few
events at moderate rates (20k events/s and a 0.2 ms fsync: ~4 events, ~7 µs
of fsync CPU per event). So the thread starts at most one group per ``interval``
(``CommitIntervalMs``, 1 ms by default: ~20 events a group at 20k/s): after a
group is durable it tells the loop at once (the answers go out), then, if the
group started less than an interval ago, waits out the rest (a precise timed
wait: the loop's timers only count whole milliseconds) and tells the loop it
is ready; meanwhile records gather in the open group. A record that finds the
thread ready is handed over at the end of the loop pass that read it, with
whatever else that pass read: below one group per interval nothing waits, so
an answer costs a write and an fdatasync, not an interval more. An interval
of 0 never waits.

File format (engine/spool.py has the reader): header ``b"TRKSPOOL"``, u32
version 2, u32 0; then per record u32 payload length, u32 CRC-32 of (seq as
u64 little-endian + payload), u64 seq, payload (engine/record.py). Files are
``<dir>/w<pid>-<tag>-<n>.spool`` (``tag`` random per writer: in a container
every restart brings the same pids back, and a new worker must never reuse a
dead one's name), created as ``.new``, flock'ed, header fsynced,
renamed, directory fsynced: no reader ever sees one unlocked while this
worker lives. Past ``rotate_bytes`` the thread starts file n+1 and closes n
(releasing its lock: a store process then reads n to its end). After each
settled group the thread publishes ``(n << 40) | durable size`` in the
worker's board slot (engine/board.py), so store processes never read past
what is durable. A failed write is cut back (ftruncate) and answered 503, and
its file closed (a store process finishes and deletes it; the next group
starts a new file). Records are written over zeros written ahead of them
(``_zero_ahead``: an fdatasync then has no new file size to commit); a file
is cut back to its records when closed.
"""
import asyncio
import os
import secrets

from libc.errno cimport errno, EINTR, EAGAIN
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memcpy, strlen
from posix.unistd cimport write, pwrite, close, fsync, ftruncate, getpid, read
from posix.time cimport clock_gettime, timespec, clockid_t, CLOCK_MONOTONIC

from engine._parse cimport Buf, buf_reserve, buf_free
from engine.http._connection cimport Ticket

cdef extern from "pthread.h" nogil:
    int pthread_create(pthread_t* t, void* attr, void* (*fn)(void*) noexcept nogil, void* arg)
    int pthread_join(pthread_t t, void** ret)
    int pthread_mutex_init(pthread_mutex_t* m, void* attr)
    int pthread_mutex_lock(pthread_mutex_t* m)
    int pthread_mutex_unlock(pthread_mutex_t* m)
    int pthread_mutex_destroy(pthread_mutex_t* m)
    int pthread_cond_init(pthread_cond_t* c, void* attr)
    int pthread_cond_wait(pthread_cond_t* c, pthread_mutex_t* m)
    int pthread_cond_timedwait(pthread_cond_t* c, pthread_mutex_t* m, const timespec* t)
    ctypedef struct pthread_condattr_t:
        pass
    int pthread_condattr_init(pthread_condattr_t* a)
    int pthread_condattr_setclock(pthread_condattr_t* a, clockid_t clock)
    int pthread_condattr_destroy(pthread_condattr_t* a)
    int pthread_cond_signal(pthread_cond_t* c)
    int pthread_cond_destroy(pthread_cond_t* c)

cdef extern from "sys/eventfd.h" nogil:
    int eventfd(unsigned int initval, int flags)
    int EFD_NONBLOCK
    int EFD_CLOEXEC

cdef extern from "fcntl.h" nogil:
    int open(const char* path, int flags, int mode)
    int O_WRONLY, O_CREAT, O_TRUNC, O_RDONLY, O_DIRECTORY, O_CLOEXEC

cdef extern from "sys/file.h" nogil:
    int flock(int fd, int op)
    int LOCK_EX

cdef extern from "stdio.h" nogil:
    int snprintf(char* out, size_t n, const char* fmt, ...)
    int rename(const char* a, const char* b)

cdef extern from "unistd.h" nogil:
    int fdatasync(int fd)

cdef extern from *:
    """
    #include <stdint.h>
    static uint32_t trk_crc_table[8][256];
    static void trk_crc_init(void) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            trk_crc_table[0][i] = c;
        }
        for (uint32_t i = 0; i < 256; i++)
            for (int t = 1; t < 8; t++)
                trk_crc_table[t][i] = (trk_crc_table[t - 1][i] >> 8)
                                      ^ trk_crc_table[0][trk_crc_table[t - 1][i] & 0xFF];
    }
    /* CRC-32 (IEEE, as zlib.crc32), eight bytes per step. */
    static uint32_t trk_crc32(uint32_t crc, const unsigned char *p, size_t n) {
        crc = ~crc;
        while (n >= 8) {
            uint32_t lo = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16
                          | (uint32_t)p[3] << 24;
            lo ^= crc;
            crc = trk_crc_table[7][lo & 0xFF] ^ trk_crc_table[6][(lo >> 8) & 0xFF]
                ^ trk_crc_table[5][(lo >> 16) & 0xFF] ^ trk_crc_table[4][lo >> 24]
                ^ trk_crc_table[3][p[4]] ^ trk_crc_table[2][p[5]]
                ^ trk_crc_table[1][p[6]] ^ trk_crc_table[0][p[7]];
            p += 8;
            n -= 8;
        }
        while (n--) crc = trk_crc_table[0][(crc ^ *p++) & 0xFF] ^ (crc >> 8);
        return ~crc;
    }
    static inline void trk_store_u64(uint64_t *p, uint64_t v) {
        __atomic_store_n(p, v, __ATOMIC_RELEASE);
    }
    static inline int64_t trk_load_i64(int64_t *p) {
        return __atomic_load_n(p, __ATOMIC_ACQUIRE);
    }
    static inline void trk_store_i64(int64_t *p, int64_t v) {
        __atomic_store_n(p, v, __ATOMIC_RELEASE);
    }
    static const char trk_zeros[65536];
    """
    const char trk_zeros[65536]
    void trk_crc_init() nogil
    uint32_t trk_crc32(uint32_t crc, const unsigned char* p, size_t n) nogil
    void trk_store_u64(uint64_t* p, uint64_t v) nogil
    int64_t trk_load_i64(int64_t* p) nogil
    void trk_store_i64(int64_t* p, int64_t v) nogil

trk_crc_init()

cdef enum:
    HEADER_SIZE = 16
    FRAME_SIZE = 16
    VERSION = 2
    OFFSET_BITS = 40
    ZERO_AHEAD = 1 << 20    # bytes of zeros written ahead of the records at a time
    ZERO_BLOCK = 65536      # trk_zeros' size


def crc32(data, crc=0):
    """The CRC the frames carry (equal to zlib.crc32; for tests)."""
    cdef const unsigned char[::1] view = data
    if view.shape[0] == 0:
        return crc
    return trk_crc32(crc, &view[0], view.shape[0])


# ---- the committer thread's side (no GIL) -----------------------------------
cdef int _write_all(int fd, const char* p, Py_ssize_t n, int64_t at) noexcept nogil:
    """pwrite all ``n`` bytes at offset ``at``; 0 or an errno."""
    cdef Py_ssize_t done
    while n > 0:
        done = pwrite(fd, p, n, at)
        if done < 0:
            if errno == EINTR:
                continue
            return errno
        p += done
        n -= done
        at += done
    return 0


cdef void _zero_ahead(Shared* sh, int64_t need) noexcept nogil:
    """Make sure the next ``need`` bytes land on zeros already in the file.

    An fdatasync after an append must also commit the file's new size (an
    ext4 journal commit): ~23 µs of the worker's CPU and ~90 µs of wall time
    per group here, against ~13 µs and ~50 µs when the group overwrites
    bytes the file already has (a C loop of 7 KB groups, 4,000 each way). So
    the file is extended ZERO_AHEAD bytes of zeros at a time, before the
    group that needs them; the next fdatasync writes those back once. Never
    past ``rotate_bytes`` (the file is closed there; the group that crosses it
    is an append). Zeros are not records: a frame of zeros fails its seq
    check, so a reader stops there as at any torn tail, and the file is cut
    back to its records when it is closed (a crash leaves the zeros: a torn
    tail, as a crash mid-write always could). A failed zero write only costs
    the saving: the group is written all the same."""
    cdef int64_t end, at, n
    cdef Py_ssize_t done
    if not sh.durable or sh.size + need <= sh.zeroed:
        return
    end = min(sh.zeroed + ZERO_AHEAD, sh.rotate_bytes)
    if end < sh.size + need:
        return
    at = sh.zeroed
    while at < end:
        n = min(end - at, ZERO_BLOCK)
        done = pwrite(sh.fd, trk_zeros, n, at)
        if done <= 0:
            if done < 0 and errno == EINTR:
                continue
            break
        at += done
    sh.zeroed = at


cdef void _cut_back(Shared* sh) noexcept nogil:
    """Cut the file to its records before it is closed (no zeros left)."""
    if sh.zeroed > sh.size:
        ftruncate(sh.fd, sh.size)


cdef int _open_file(Shared* sh, uint64_t n) noexcept nogil:
    """Create, lock and publish file n; returns its fd or -errno."""
    cdef char final[4200]
    cdef char tmp[4210]
    cdef char header[HEADER_SIZE]
    cdef uint32_t version = VERSION, zero = 0
    cdef int fd, err
    snprintf(final, sizeof(final), "%s/w%d-%s-%llu.spool", sh.directory, <int>sh.pid,
             sh.tag, <unsigned long long>n)
    snprintf(tmp, sizeof(tmp), "%s.new", final)
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    if fd < 0:
        return -errno
    memcpy(header, b"TRKSPOOL", 8)
    memcpy(header + 8, &version, 4)
    memcpy(header + 12, &zero, 4)
    if flock(fd, LOCK_EX) != 0 or _write_all(fd, header, HEADER_SIZE, 0) != 0 \
            or fsync(fd) != 0 or rename(tmp, final) != 0:
        err = errno
        close(fd)
        return -(err if err else 5)
    fsync(sh.dir_fd)
    return fd


cdef void _publish(Shared* sh) noexcept nogil:
    if sh.board != NULL:
        trk_store_u64(sh.board, (sh.file_no << OFFSET_BITS) | <uint64_t>sh.size)


cdef int _write_group(Shared* sh) noexcept nogil:
    """Write and (durable) sync the handed group; 0 or an errno. A failed
    group is cut off its file, which is then closed: its lock goes, so a
    store process finishes and deletes it (freeing a full disk), and the next
    group starts file n+1."""
    cdef int err, fd
    if sh.fd < 0:
        fd = _open_file(sh, sh.file_no + 1)
        if fd < 0:
            return -fd
        sh.fd = fd
        sh.file_no += 1
        trk_store_i64(&sh.size, HEADER_SIZE)
        sh.zeroed = HEADER_SIZE
        _publish(sh)
    _zero_ahead(sh, sh.handed.len)
    err = _write_all(sh.fd, sh.handed.data, sh.handed.len, sh.size)
    if err == 0 and sh.durable and fdatasync(sh.fd) != 0:
        err = errno
    if err:
        ftruncate(sh.fd, sh.size)        # the group was never acknowledged
        close(sh.fd)
        sh.fd = -1
        return err
    trk_store_i64(&sh.size, sh.size + sh.handed.len)
    _publish(sh)
    return 0


cdef void _rotate(Shared* sh) noexcept nogil:
    """Start file n+1 and close n (its lock goes: readers then read it to the end).
    A failure keeps writing n; rotation is tried again after the next group."""
    cdef int fd = _open_file(sh, sh.file_no + 1)
    if fd < 0:
        return
    _cut_back(sh)
    close(sh.fd)
    sh.fd = fd
    sh.file_no += 1
    trk_store_i64(&sh.size, HEADER_SIZE)
    sh.zeroed = HEADER_SIZE
    _publish(sh)


cdef int64_t _now_ns() noexcept nogil:
    cdef timespec t
    clock_gettime(CLOCK_MONOTONIC, &t)
    return <int64_t>t.tv_sec * 1000000000 + t.tv_nsec


cdef void _pace(Shared* sh, int64_t until) noexcept nogil:
    """Wait (``mu`` held) until ``until`` or a stop."""
    cdef timespec t
    t.tv_sec = until // 1000000000
    t.tv_nsec = until % 1000000000
    while not sh.stop and _now_ns() < until:
        pthread_cond_timedwait(&sh.cv, &sh.mu, &t)


cdef void* _committer(void* arg) noexcept nogil:
    cdef Shared* sh = <Shared*>arg
    cdef int err
    cdef uint64_t one = 1
    cdef int64_t started
    while True:
        pthread_mutex_lock(&sh.mu)
        while not sh.go and not sh.stop:
            pthread_cond_wait(&sh.cv, &sh.mu)
        if not sh.go:
            pthread_mutex_unlock(&sh.mu)
            return NULL
        pthread_mutex_unlock(&sh.mu)
        started = _now_ns()
        err = _write_group(sh)
        if err == 0 and sh.size >= sh.rotate_bytes:
            _rotate(sh)
        pthread_mutex_lock(&sh.mu)
        sh.result = err
        sh.go = False
        sh.settled += 1
        sh.pacing = sh.interval_ns > 0 and _now_ns() < started + sh.interval_ns
        pthread_mutex_unlock(&sh.mu)
        write(sh.efd, &one, 8)          # the group's answers go out now
        if sh.pacing:
            pthread_mutex_lock(&sh.mu)
            _pace(sh, started + sh.interval_ns)
            sh.pacing = False
            pthread_mutex_unlock(&sh.mu)
            write(sh.efd, &one, 8)      # ready for the records gathered meanwhile


# ---- the loop's side ----------------------------------------------------------
cdef class SpoolWriter:
    """One per HTTP worker. ``board_address``: the worker's board slot's
    ``spool`` field (engine/board.py ``Slot.field_address``), or 0."""

    def __cinit__(self):
        self.sh = <Shared*>calloc(1, sizeof(Shared))
        if self.sh == NULL:
            raise MemoryError()
        self.sh.fd = self.sh.efd = self.sh.dir_fd = -1

    def __init__(self, directory, max_bytes, durable=True, rotate_bytes=8 << 20,
                 board_address=0, interval_ms=1.0, group_bytes=256 << 10):
        cdef bytes where = os.fsencode(os.path.abspath(directory))
        cdef bytes tag = secrets.token_hex(4).encode()
        cdef int fd
        cdef Shared* sh = self.sh
        cdef pthread_condattr_t attr
        if len(where) >= 4000:
            raise OSError(36, "spool directory path too long", directory)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        memcpy(sh.directory, <char*>where, len(where) + 1)
        sh.pid = getpid()
        memcpy(sh.tag, <char*>tag, len(tag) + 1)
        sh.durable = durable
        sh.rotate_bytes = min(rotate_bytes, max(max_bytes // 8, 1 << 16))
        sh.board = <uint64_t*><size_t>board_address
        sh.dir_fd = open(sh.directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0)
        if sh.dir_fd < 0:
            raise OSError(errno, os.strerror(errno), directory)
        pthread_mutex_init(&sh.mu, NULL)
        pthread_condattr_init(&attr)
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)     # _pace's deadlines
        pthread_cond_init(&sh.cv, &attr)
        pthread_condattr_destroy(&attr)
        sh.interval_ns = <int64_t>(interval_ms * 1e6)
        sh.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        if sh.efd < 0:
            raise OSError(errno, os.strerror(errno))
        fd = _open_file(sh, 1)
        if fd < 0:
            raise OSError(-fd, os.strerror(-fd), directory)
        sh.fd, sh.file_no, sh.size, sh.zeroed = fd, 1, HEADER_SIZE, HEADER_SIZE
        _publish(sh)
        self.max_bytes = max_bytes
        self.old_bytes = 0
        self.open_ticket = Ticket()
        self.groups = 0
        self.seq = 0
        self.busy = False
        self.thread_ready = True
        self.healthy = True
        self.on_settled = None
        self.flush_cb = self._flush
        self.group_bytes = group_bytes

    def start(self, loop):
        """Start the committer thread and listen for settled groups."""
        if pthread_create(&self.thread, NULL, _committer, self.sh) != 0:
            raise OSError(errno, "cannot start the spool committer thread")
        self.thread_started = True
        self.loop = loop
        loop.add_reader(self.sh.efd, self._settled)

    # ---- request path ----------------------------------------------------
    cdef Py_ssize_t begin(self) except -1:
        """Reserve a record's frame in the open group; the record follows."""
        cdef Py_ssize_t start
        buf_reserve(&self.open_group, FRAME_SIZE)
        start = self.open_group.len
        self.open_group.len += FRAME_SIZE
        return start

    cdef Ticket finish(self, Py_ssize_t start):
        """Seal the record begun at ``start``; returns the ticket its answer
        waits on."""
        cdef char* frame = self.open_group.data + start
        cdef uint32_t length = <uint32_t>(self.open_group.len - start - FRAME_SIZE)
        cdef uint32_t crc
        self.seq += 1
        memcpy(frame + 8, &self.seq, 8)
        crc = trk_crc32(0, <const unsigned char*>frame + 8, 8)
        crc = trk_crc32(crc, <const unsigned char*>frame + FRAME_SIZE, length)
        memcpy(frame, &length, 4)
        memcpy(frame + 4, &crc, 4)
        self.open_records += 1
        if self.thread_ready:
            if self.open_group.len >= self.group_bytes:
                self._hand_over()
            elif not self.flush_scheduled:
                self.flush_scheduled = True
                self.loop.call_soon(self.flush_cb)
        # else: the thread's next "ready" hands the open group over
        return self.open_ticket

    def append(self, payload):
        """Spool one record given as bytes (the reference parser's path, tests);
        returns the ticket its answer waits on."""
        cdef const unsigned char[::1] view = payload
        cdef Py_ssize_t start = self.begin(), n = view.shape[0]
        buf_reserve(&self.open_group, n)
        if n:
            memcpy(self.open_group.data + self.open_group.len, &view[0], n)
        self.open_group.len += n
        return self.finish(start)

    cdef void rollback(self, Py_ssize_t start) noexcept:
        self.open_group.len = start

    cdef int64_t bytes_used(self) noexcept:
        cdef int64_t used = self.old_bytes + trk_load_i64(&self.sh.size) + self.open_group.len
        if self.busy:
            used += self.sh.handed.len
        return used

    @property
    def accepting(self):
        """Healthy and under the high-water mark (90 % of SpoolMaxBytes)."""
        return self.healthy and self.bytes_used() < 0.9 * self.max_bytes

    @property
    def used(self):
        return self.bytes_used()

    @property
    def path(self):
        return os.path.join(os.fsdecode(self.sh.directory), "w%d-%s-%d.spool" % (
            self.sh.pid, self.sh.tag.decode(), self.sh.file_no))

    @property
    def pending_records(self):
        return self.open_records + (self.handed_records if self.busy else 0)

    # ---- groups ----------------------------------------------------------
    def _flush(self):
        """The loop pass that found the thread ready is over: hand over what
        it read."""
        self.flush_scheduled = False
        if self.open_group.len and self.thread_ready:
            self._hand_over()

    cdef int _hand_over(self) except -1:
        cdef Shared* sh = self.sh
        cdef Buf spare
        pthread_mutex_lock(&sh.mu)
        spare = sh.handed
        sh.handed = self.open_group
        self.open_group = spare
        self.open_group.len = 0
        sh.go = True
        pthread_cond_signal(&sh.cv)
        pthread_mutex_unlock(&sh.mu)
        self.busy = True
        self.thread_ready = False
        self.handed_groups += 1
        self.handed_ticket = self.open_ticket
        self.handed_records = self.open_records
        self.open_ticket = Ticket()
        self.open_records = 0
        return 0

    def _settled(self):
        """The committer thread finished a group (answer its requests) and/or
        is ready for the next (hand over the records gathered meanwhile)."""
        cdef uint64_t count, settled
        cdef int result
        cdef bint pacing
        if read(self.sh.efd, &count, 8) != 8:
            return
        pthread_mutex_lock(&self.sh.mu)
        result = self.sh.result
        settled = self.sh.settled
        pacing = self.sh.pacing or self.sh.go
        pthread_mutex_unlock(&self.sh.mu)
        if self.busy and settled == self.handed_groups:
            self._answer_group(result)
        if not self.busy and not pacing:
            self.thread_ready = True
            if self.open_group.len:
                self._hand_over()

    cdef int _answer_group(self, int result) except -1:
        cdef Ticket ticket
        cdef Py_ssize_t records
        self.busy = False
        records = self.handed_records
        ticket, self.handed_ticket = self.handed_ticket, None
        self.groups += 1
        if result:
            self._failed(result)
        elif not self.healthy:
            self.healthy = True
        ticket.settle(result == 0)
        if self.on_settled is not None:
            self.on_settled(result == 0, records)
        return 0

    def _failed(self, int err):
        from engine.logs import log
        if self.healthy:
            log.error("spool write failed; answering 503 until it works again",
                      path=self.path, error=os.strerror(err))
        self.healthy = False
        self.loop.call_later(1.0, self._probe)

    def _probe(self):
        """After a failed write, let traffic try again (a full disk may have
        been cleared)."""
        self.healthy = True

    async def flush(self):
        """Hand over what is open and wait until every group is settled (drain)."""
        while self.busy or self.open_group.len:
            if self.thread_ready and self.open_group.len:
                self._hand_over()
            await asyncio.sleep(0.002)

    def refresh_old_bytes(self):
        """Bytes of this worker's earlier files still on disk (not yet fully
        written by every store): part of what SpoolMaxBytes bounds."""
        prefix = "w%d-%s-" % (self.sh.pid, self.sh.tag.decode())
        current = os.path.basename(self.path)
        total = 0
        directory = os.fsdecode(self.sh.directory)
        try:
            with os.scandir(directory) as found:
                for entry in found:
                    name = entry.name
                    if name.startswith(prefix) and name.endswith(".spool") and name != current:
                        try:
                            total += entry.stat().st_size
                        except FileNotFoundError:
                            pass
        except FileNotFoundError:
            pass
        self.old_bytes = total
        return total

    def close(self):
        """Stop the thread (after ``flush``) and close the file; it stays on
        disk for the store processes."""
        cdef Shared* sh = self.sh
        if self.loop is not None and sh.efd >= 0:
            self.loop.remove_reader(sh.efd)
        if self.thread_started:
            pthread_mutex_lock(&sh.mu)
            sh.stop = True
            pthread_cond_signal(&sh.cv)
            pthread_mutex_unlock(&sh.mu)
            with nogil:
                pthread_join(self.thread, NULL)
            self.thread_started = False
        if sh.fd >= 0:
            _cut_back(sh)
        for fd in (sh.fd, sh.efd, sh.dir_fd):
            if fd >= 0:
                close(fd)
        sh.fd = sh.efd = sh.dir_fd = -1

    def __dealloc__(self):
        if self.sh != NULL:
            if not self.thread_started:
                buf_free(&self.sh.handed)
                free(self.sh)
            self.sh = NULL
        buf_free(&self.open_group)
