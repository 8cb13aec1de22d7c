# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Node-wide limits in shared memory: token buckets and connection counts.

The supervisor creates one anonymous ``MAP_SHARED`` mapping before it forks;
every worker inherits the same pages, so a limit holds for the node as a
whole rather than per worker.

Byte layout (native byte order and alignment, x86-64 / aarch64 Linux):

    offset 0        header, 64 bytes
                      uint64 magic        b"TRKLIM01"
                      uint32 version      1
                      uint32 conn_slots   CONN_SLOTS (128)
                      uint32 ip_slots     a power of two
                      uint32 classes      CLASSES (4)
                      (rest zero)
    offset 64       connection counts: conn_slots x int64
                      Slot i belongs to one worker (the supervisor hands out
                      slots and zeroes a dead worker's slot), so each slot has
                      a single writer and needs no lock; readers sum all slots.
    then            global buckets: classes x Bucket
    then            per-IP buckets: ip_slots x Bucket

    Bucket, 32 bytes:
      uint32 lock       0 free, else the holder's pid (spinlock, see below)
      uint32 unused
      uint64 key        FNV-1a-64 of (class byte, IP text); 0 = empty slot
      int64  tokens     micro-tokens (one request costs 1,000,000)
      int64  stamp_ns   CLOCK_MONOTONIC of the last refill (system-wide clock)

Locking: each bucket has its own spinlock word, taken with an atomic
compare-and-swap (acquire) and released with an atomic store (release); the
critical section is a few arithmetic instructions. A process killed while
holding a lock would leave it held, so a spinner that waits more than
SPIN_LIMIT rounds checks whether the holder pid is alive and takes the lock
over if it is not. When both an IP and a global bucket are checked, the IP
bucket is always locked first (one order, no deadlock), and tokens are taken
from both or from neither.

Collision policy: an IP's key selects a home slot; up to PROBE consecutive
slots are searched for the key, else an empty slot is claimed, else the
least recently refilled of those slots is evicted and starts full for the
new key. Eviction only happens when the table is crowded (more active IPs
than slots): then a long-idle client may get a fresh burst; no client is ever
refused because of another client's bucket.

The hot path allocates nothing: IPs are hashed straight from the str's
ASCII buffer and results are small ints.
"""
from libc.stdint cimport int64_t, uint32_t, uint64_t, uint8_t
from libc.string cimport memset
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC
from posix.unistd cimport getpid
from posix.signal cimport kill
from libc.errno cimport errno, ESRCH
from libc.math cimport ceil

import mmap as _mmap

cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object o)
    void* PyUnicode_DATA(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)

cdef extern from *:
    """
    static inline int trk_cas_u32(uint32_t *p, uint32_t expected, uint32_t desired) {
        return __atomic_compare_exchange_n(p, &expected, desired, 0,
                                           __ATOMIC_ACQUIRE, __ATOMIC_RELAXED);
    }
    static inline void trk_store_u32(uint32_t *p, uint32_t v) {
        __atomic_store_n(p, v, __ATOMIC_RELEASE);
    }
    static inline uint32_t trk_load_u32(uint32_t *p) {
        return __atomic_load_n(p, __ATOMIC_RELAXED);
    }
    static inline void trk_pause(void) {
    #if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
    #endif
    }
    """
    int trk_cas_u32(uint32_t *p, uint32_t expected, uint32_t desired) nogil
    void trk_store_u32(uint32_t *p, uint32_t v) nogil
    uint32_t trk_load_u32(uint32_t *p) nogil
    void trk_pause() nogil

DEF HEADER = 64
DEF CONN_SLOTS = 128
DEF CLASSES = 4
DEF PROBE = 8
DEF SPIN_LIMIT = 200000
DEF COST = 1000000          # micro-tokens per request
cdef uint64_t MAGIC = 0x313054494d4c4b52ULL   # b"RKLMIT01" little-endian tag
cdef uint64_t FNV64_OFFSET = 14695981039346656037ULL
cdef uint64_t FNV64_PRIME = 1099511628211ULL

CONNECTION_SLOTS = CONN_SLOTS
ROUTE_CLASSES = CLASSES


cdef inline int64_t now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef inline void lock_bucket(Bucket* b, uint32_t me) noexcept:
    cdef long spins = 0
    cdef uint32_t holder
    while not trk_cas_u32(&b.lock, 0, me):
        spins += 1
        trk_pause()
        if spins >= SPIN_LIMIT:
            holder = trk_load_u32(&b.lock)
            if holder != 0 and kill(<int>holder, 0) != 0 and errno == ESRCH:
                # The holder died inside the critical section: take over.
                if trk_cas_u32(&b.lock, holder, me):
                    return
            spins = 0


cdef inline void unlock_bucket(Bucket* b) noexcept:
    trk_store_u32(&b.lock, 0)


cdef inline void refill(Bucket* b, double rate, double burst, int64_t now) noexcept:
    """Add tokens for the time since the last refill, capped at the burst."""
    cdef int64_t cap = <int64_t>(burst * COST)
    cdef int64_t elapsed = now - b.stamp_ns
    cdef double add
    if elapsed > 0:
        add = <double>elapsed * rate / 1000.0   # rate/s * 1e6 micro / 1e9 ns
        if b.tokens + add >= cap:
            b.tokens = cap
        else:
            b.tokens += <int64_t>add
        b.stamp_ns = now
    if b.tokens > cap:
        b.tokens = cap


cdef inline int retry_after(Bucket* b, double rate) noexcept:
    """Whole seconds until one request's worth of tokens is back (>= 1)."""
    cdef double need
    if rate <= 0:
        return 60
    need = <double>(COST - b.tokens) / (rate * COST)
    if need < 1:
        return 1
    return <int>ceil(need)


cdef inline uint64_t ip_key(int cls, str ip) noexcept:
    cdef uint64_t h = FNV64_OFFSET
    cdef const uint8_t* p
    cdef Py_ssize_t i, n
    h = (h ^ <uint8_t>cls) * FNV64_PRIME
    if PyUnicode_IS_ASCII(ip):
        p = <const uint8_t*>PyUnicode_DATA(ip)
        n = PyUnicode_GET_LENGTH(ip)
        for i in range(n):
            h = (h ^ p[i]) * FNV64_PRIME
    else:   # not an IP text; still deterministic, never allocates
        n = PyUnicode_GET_LENGTH(ip)
        h = (h ^ <uint64_t>n) * FNV64_PRIME
    return h if h != 0 else 1


cdef class SharedLimits:
    """A view of the shared region. ``create`` in the supervisor before the
    fork; children use the inherited object as it is. (Attributes and C
    methods: _bucket.pxd, so compiled callers take tokens without a Python call.)"""

    def __cinit__(self, object region, uint32_t ip_slots):
        cdef uint8_t[::1] view = region
        if ip_slots == 0 or (ip_slots & (ip_slots - 1)) != 0:
            raise ValueError("ip_slots must be a power of two")
        if view.shape[0] < SharedLimits.size_for(ip_slots):
            raise ValueError("shared region too small")
        self._map = region
        self._base = &view[0]
        self._conns = <int64_t*>(self._base + HEADER)
        self._globals = <Bucket*>(self._base + HEADER + 8 * CONN_SLOTS)
        self._ips = self._globals + CLASSES
        self._mask = ip_slots - 1
        self._ip_slots = ip_slots

    @staticmethod
    def size_for(uint32_t ip_slots):
        return HEADER + 8 * CONN_SLOTS + sizeof(Bucket) * (CLASSES + ip_slots)

    @staticmethod
    def create(uint32_t ip_slots=65536):
        """A new zeroed region (anonymous, shared with children forked later)."""
        size = SharedLimits.size_for(ip_slots)
        region = _mmap.mmap(-1, size, flags=_mmap.MAP_SHARED)
        limits = SharedLimits(region, ip_slots)
        limits._write_header()
        return limits

    cdef void _write_header(self):
        memset(self._base, 0, HEADER)
        (<uint64_t*>self._base)[0] = MAGIC
        (<uint32_t*>(self._base + 8))[0] = 1
        (<uint32_t*>(self._base + 12))[0] = CONN_SLOTS
        (<uint32_t*>(self._base + 16))[0] = self._ip_slots
        (<uint32_t*>(self._base + 20))[0] = CLASSES

    # ---- token buckets ---------------------------------------------------
    cpdef int allow(self, int cls, str ip, double ip_rate, double ip_burst,
                    double g_rate, double g_burst):
        """Take one request's tokens. 0 = allowed, else Retry-After seconds.

        A limit whose burst is 0 is off.
        """
        cdef uint32_t me = <uint32_t>getpid()
        cdef int64_t now = now_ns()
        cdef Bucket* ib = NULL
        cdef Bucket* gb = NULL
        cdef int wait = 0
        if cls < 0 or cls >= CLASSES:
            cls = 0
        if ip_burst > 0:
            ib = self._ip_bucket(cls, ip, ip_burst, now, me)   # returned locked
            refill(ib, ip_rate, ip_burst, now)
            if ib.tokens < COST:
                wait = retry_after(ib, ip_rate)
        if g_burst > 0 and wait == 0:
            gb = self._globals + cls
            lock_bucket(gb, me)
            if gb.stamp_ns == 0:
                gb.tokens = <int64_t>(g_burst * COST)
                gb.stamp_ns = now
            refill(gb, g_rate, g_burst, now)
            if gb.tokens < COST:
                wait = retry_after(gb, g_rate)
        if wait == 0:
            if ib != NULL:
                ib.tokens -= COST
            if gb != NULL:
                gb.tokens -= COST
        if gb != NULL:
            unlock_bucket(gb)
        if ib != NULL:
            unlock_bucket(ib)
        return wait

    cdef Bucket* _ip_bucket(self, int cls, str ip, double burst, int64_t now,
                            uint32_t me) noexcept:
        """The locked bucket of (cls, ip): found, claimed or evicted."""
        cdef uint64_t key = ip_key(cls, ip)
        cdef uint32_t home = <uint32_t>(key ^ (key >> 32)) & self._mask
        cdef uint32_t i
        cdef Bucket* b
        cdef Bucket* oldest = NULL
        cdef int64_t oldest_stamp = 0
        for i in range(PROBE):
            b = self._ips + ((home + i) & self._mask)
            lock_bucket(b, me)
            if b.key == key:
                if oldest != NULL:
                    unlock_bucket(oldest)
                return b
            if b.key == 0:
                if oldest != NULL:
                    unlock_bucket(oldest)
                b.key = key
                b.tokens = <int64_t>(burst * COST)
                b.stamp_ns = now
                return b
            if oldest == NULL or b.stamp_ns < oldest_stamp:
                if oldest != NULL:
                    unlock_bucket(oldest)
                oldest = b
                oldest_stamp = b.stamp_ns
            else:
                unlock_bucket(b)
        oldest.key = key
        oldest.tokens = <int64_t>(burst * COST)
        oldest.stamp_ns = now
        return oldest

    # ---- connections -----------------------------------------------------
    cpdef int64_t conn_add(self, int slot, int64_t delta):
        """Change this worker's own count; return the node-wide total."""
        self._conns[slot] += delta
        return self.conn_total()

    cpdef int64_t conn_total(self):
        cdef int64_t total = 0
        cdef int i
        for i in range(CONN_SLOTS):
            total += self._conns[i]
        return total

    def conn_reset(self, int slot):
        """Supervisor: a worker died; forget the connections it held."""
        if not 0 <= slot < CONN_SLOTS:
            raise IndexError(slot)
        self._conns[slot] = 0

    def conn_slot_count(self, int slot):
        return self._conns[slot]
