"""Keep CPython's freed object arenas for reuse instead of unmapping them.

Why: a store process decodes a batch of thousands of events into dicts,
writes them, and frees them all at once. pymalloc hands every arena that
becomes empty back to the kernel (munmap; it keeps one), so the next batch
maps them again and the kernel zeroes each page on its first touch: in
``bench_store.py --sections serve`` page faults and ``clear_page`` were
~6 % of the store process's CPU. This installs an arena allocator in front
of the interpreter's own that keeps up to a budget of freed arenas and
hands them out again; arenas past the budget, and every miss, go to the
allocator that was in place (mmap/munmap).

pymalloc calls the arena allocator with the GIL held, so the stack needs no
lock. A reused arena is not zeroed: pymalloc never assumes it is (calloc
clears its block itself).
"""

cdef extern from "Python.h":
    ctypedef struct PyObjectArenaAllocator:
        void *ctx
        void *(*alloc)(void *ctx, size_t size) noexcept
        void (*free)(void *ctx, void *ptr, size_t size) noexcept
    void PyObject_GetArenaAllocator(PyObjectArenaAllocator *allocator)
    void PyObject_SetArenaAllocator(PyObjectArenaAllocator *allocator)

cdef enum:
    MAX_SLOTS = 4096

cdef PyObjectArenaAllocator _previous
cdef void *_kept[MAX_SLOTS]
cdef size_t _kept_count = 0
cdef size_t _slots = 0          # how many arenas may be kept (0: not installed)
cdef size_t _arena_size = 0     # the size pymalloc asks for (one size per build)
cdef size_t _reused = 0
cdef size_t _released = 0


cdef void *_alloc(void *ctx, size_t size) noexcept:
    global _kept_count, _reused
    if _kept_count and size == _arena_size:
        _kept_count -= 1
        _reused += 1
        return _kept[_kept_count]
    return _previous.alloc(_previous.ctx, size)


cdef void _free(void *ctx, void *ptr, size_t size) noexcept:
    global _kept_count, _arena_size, _released
    if _arena_size == 0:
        _arena_size = size
    if size == _arena_size and _kept_count < _slots:
        _kept[_kept_count] = ptr
        _kept_count += 1
        return
    _released += 1
    _previous.free(_previous.ctx, ptr, size)


def keep(size_t budget_bytes, size_t arena_bytes=1 << 20):
    """Keep up to ``budget_bytes`` of freed arenas (``arena_bytes`` each, the
    interpreter's arena size: 1 MiB on 64-bit CPython 3.10+) for reuse.
    Installs the allocator once; later calls only change the budget (arenas
    kept past a smaller budget stay until reused). Returns the slot count."""
    global _slots
    cdef PyObjectArenaAllocator mine
    cdef size_t slots = budget_bytes // arena_bytes if arena_bytes else 0
    if slots > MAX_SLOTS:
        slots = MAX_SLOTS
    if _previous.alloc == NULL:
        PyObject_GetArenaAllocator(&_previous)
        mine.ctx = NULL
        mine.alloc = _alloc
        mine.free = _free
        PyObject_SetArenaAllocator(&mine)
    _slots = slots
    return slots


def stats():
    """(arenas kept now, reuses, arenas released to the previous allocator)."""
    return _kept_count, _reused, _released
