# cython: language_level=3, boundscheck=False, wraparound=False
"""The SQLite sink's batch writer, compiled: decoded events to rows through SQLite's C API.

The same rows as engine/store/sinks/sqlite_model.py (its pure-Python twin,
kept, selectable and checked against this one: tests/unit/test_sqlite_write.py),
written without a Python tuple, cursor call or converted value per column:
each event's dict is walked once, its values bound straight into one
prepared ``INSERT INTO ev``, and whether the row landed read from SQLite's
change counter. Only the events that landed are fanned out, in the same
transaction: each one's first-visit and first-referral candidates upserted
right after its row (the upserts keep the earliest whatever the order, so no
per-batch winner is chosen in Python), its counters coalesced per key in
place (a ``Count`` per key, one dict look-up per increment) and written at
the end of the batch.

The writer has a connection of its own (``sqlite3_open_v2``) to the sink's
file, used only for event batches and only under the sink's lock; schema,
migration and bus messages keep the sink's ``sqlite3`` connection. The
library is linked by its run-time name (libsqlite3.so.0, the one Python's own
``sqlite3`` module loads), and its API declared here, so a build needs no
development headers.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
cimport cython
from cpython.dict cimport PyDict_GetItemWithError, PyDict_Next
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.object cimport PyObject
from libc.limits cimport LLONG_MAX, LLONG_MIN
from libc.math cimport fabs
from libc.stdint cimport uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcmp, memcpy
from cpython.unicode cimport PyUnicode_AsUTF8AndSize

from engine._uuidtext cimport uuid_from_text

import os
import sqlite3 as _sqlite3

import orjson

from engine.store.fanout import utc_day
from engine.store.sinks.sqlite_model import (COUNTER_SQL, FIRST_REFS_SQL, FIRST_VISITS_SQL,
                                             PLAIN, latlon_text, uuid_bytes, vp_text)

cdef extern from *:
    """
    typedef struct sqlite3 sqlite3;
    typedef struct sqlite3_stmt sqlite3_stmt;
    int sqlite3_open_v2(const char *, sqlite3 **, int, const char *);
    int sqlite3_close_v2(sqlite3 *);
    int sqlite3_busy_timeout(sqlite3 *, int);
    int sqlite3_exec(sqlite3 *, const char *, void *, void *, char **);
    int sqlite3_prepare_v2(sqlite3 *, const char *, int, sqlite3_stmt **, const char **);
    int sqlite3_step(sqlite3_stmt *);
    int sqlite3_reset(sqlite3_stmt *);
    int sqlite3_clear_bindings(sqlite3_stmt *);
    int sqlite3_finalize(sqlite3_stmt *);
    int sqlite3_bind_int64(sqlite3_stmt *, int, long long);
    int sqlite3_bind_double(sqlite3_stmt *, int, double);
    int sqlite3_bind_text(sqlite3_stmt *, int, const char *, int, void (*)(void *));
    int sqlite3_bind_blob(sqlite3_stmt *, int, const void *, int, void (*)(void *));
    int sqlite3_bind_null(sqlite3_stmt *, int);
    int sqlite3_total_changes(sqlite3 *);
    long long sqlite3_last_insert_rowid(sqlite3 *);
    long long sqlite3_column_int64(sqlite3_stmt *, int);
    const char *sqlite3_errmsg(sqlite3 *);
    int sqlite3_get_autocommit(sqlite3 *);
    /* Values of sqlite3.h (a stable ABI since 3.0). */
    #define TRK_SQLITE_OK 0
    #define TRK_SQLITE_CONSTRAINT 19
    #define TRK_SQLITE_ROW 100
    #define TRK_SQLITE_DONE 101
    #define TRK_SQLITE_OPEN_READWRITE 0x00000002
    #define TRK_SQLITE_OPEN_NOMUTEX 0x00008000
    #define TRK_SQLITE_STATIC ((void (*)(void *))0)
    #define TRK_SQLITE_TRANSIENT ((void (*)(void *))-1)
    """
    ctypedef struct sqlite3
    ctypedef struct sqlite3_stmt
    int sqlite3_open_v2(const char *, sqlite3 **, int, const char *)
    int sqlite3_close_v2(sqlite3 *)
    int sqlite3_busy_timeout(sqlite3 *, int)
    int sqlite3_exec(sqlite3 *, const char *, void *, void *, char **) nogil
    int sqlite3_prepare_v2(sqlite3 *, const char *, int, sqlite3_stmt **, const char **)
    int sqlite3_step(sqlite3_stmt *) nogil
    int sqlite3_reset(sqlite3_stmt *)
    int sqlite3_clear_bindings(sqlite3_stmt *)
    int sqlite3_finalize(sqlite3_stmt *)
    int sqlite3_bind_int64(sqlite3_stmt *, int, long long)
    int sqlite3_bind_double(sqlite3_stmt *, int, double)
    int sqlite3_bind_text(sqlite3_stmt *, int, const char *, int, void (*)(void *))
    int sqlite3_bind_blob(sqlite3_stmt *, int, const void *, int, void (*)(void *))
    int sqlite3_bind_null(sqlite3_stmt *, int)
    int sqlite3_total_changes(sqlite3 *)
    long long sqlite3_last_insert_rowid(sqlite3 *)
    long long sqlite3_column_int64(sqlite3_stmt *, int)
    const char *sqlite3_errmsg(sqlite3 *)
    int sqlite3_get_autocommit(sqlite3 *)
    int SQLITE_OK "TRK_SQLITE_OK"
    int SQLITE_CONSTRAINT "TRK_SQLITE_CONSTRAINT"
    int SQLITE_ROW "TRK_SQLITE_ROW"
    int SQLITE_DONE "TRK_SQLITE_DONE"
    int SQLITE_OPEN_READWRITE "TRK_SQLITE_OPEN_READWRITE"
    int SQLITE_OPEN_NOMUTEX "TRK_SQLITE_OPEN_NOMUTEX"
    void (*SQLITE_STATIC "TRK_SQLITE_STATIC")(void *)
    void (*SQLITE_TRANSIENT "TRK_SQLITE_TRANSIENT")(void *)

# ev's bind positions: the converted head (as sqlite_model.HEAD), then PLAIN.
DEF B_N = 1
DEF B_CREATED = 2
DEF B_EID = 3
DEF B_VID = 4
DEF B_SID = 5
DEF B_FIRST = 6
DEF B_URL = 7
DEF B_LAST = 8
DEF B_BROWSER = 9
DEF B_LATLON = 10
DEF B_VP = 11
DEF B_PARAMS = 12
DEF B_PLAIN = 13

# Counter tables in the order written (indexes below: C_*).
COUNTER_TABLES = ("dailies", "ips", "hits", "referrers", "browsers", "outcomes", "counters")
DEF C_DAILIES = 0
DEF C_IPS = 1
DEF C_HITS = 2
DEF C_REFERRERS = 3
DEF C_BROWSERS = 4
DEF C_OUTCOMES = 5
DEF C_COUNTERS = 6
DEF N_COUNTERS = 7

# Visitors whose first-visit and first-referral rows the writer remembers (a
# 32-byte slot each, in a table of twice as many slots: 8 MiB): returning
# visitors among the last KNOWN_MAX new ones skip their upserts
# (BatchWriter._write_firsts).
KNOWN_MAX = 100_000

_EV_SQL = ("INSERT INTO ev (n, created, eid, vid, sid, first, url, last, browser, latlon, vp, "
           "params, %s) VALUES (%s) ON CONFLICT (created, eid) DO NOTHING"
           % (", ".join(PLAIN), ", ".join("?" * (B_PLAIN - 1 + len(PLAIN)))))

# Event key -> bind position (bound as it is), or a negative code (converted).
DEF K_URL = -1
DEF K_LAST = -2
DEF K_BROWSER = -3
DEF K_PARAMS = -4
DEF K_LATLON = -5
DEF K_VP = -6
cdef dict _AT = {name: B_PLAIN + i for i, name in enumerate(PLAIN)}
_AT.update(url=K_URL, last=K_LAST, browser=K_BROWSER, params=K_PARAMS, latlon=K_LATLON,
           vp=K_VP)


cdef object _error(sqlite3 *db, int rc):
    message = (sqlite3_errmsg(db) or b"sqlite error").decode("utf-8", "replace")
    if rc & 0xff == SQLITE_CONSTRAINT:
        return _sqlite3.IntegrityError(message)
    return _sqlite3.OperationalError(message)


cdef bint _uuid_into(object text, unsigned char *out):
    """UUID text (engine/_uuidtext.pxd says which) -> 16 bytes; False if it is not one."""
    cdef Py_ssize_t size
    cdef const char *s
    if type(text) is not str:
        return False
    s = PyUnicode_AsUTF8AndSize(text, &size)
    return uuid_from_text(<const unsigned char *> s, size, out)


cdef class Stmt:
    """One prepared statement of the writer's connection."""
    cdef sqlite3_stmt *st
    cdef sqlite3 *db

    cdef int prepare(self, sqlite3 *db, str sql) except -1:
        cdef bytes text = sql.encode()
        self.db = db
        rc = sqlite3_prepare_v2(db, text, len(text), &self.st, NULL)
        if rc != SQLITE_OK:
            raise _error(db, rc)
        return 0

    cdef int run(self) except -1:
        """Step to the end (an INSERT/UPSERT), then make it ready again."""
        cdef int rc = sqlite3_step(self.st)
        sqlite3_reset(self.st)
        sqlite3_clear_bindings(self.st)
        if rc != SQLITE_DONE and rc != SQLITE_ROW:
            raise _error(self.db, rc)
        return 0

    cdef int bind_text(self, int at, object value, bint copy=False) except -1:
        """Bind a str. Not copied unless ``copy``: the caller holds ``value``
        until the statement has run."""
        cdef Py_ssize_t size
        cdef const char *s = PyUnicode_AsUTF8AndSize(value, &size)
        sqlite3_bind_text(self.st, at, s, <int>size, SQLITE_TRANSIENT if copy else SQLITE_STATIC)
        return 0

    cdef int bind_utf8(self, int at, bytes value) except -1:
        """Bind UTF-8 bytes as TEXT, copied."""
        sqlite3_bind_text(self.st, at, value, len(value), SQLITE_TRANSIENT)
        return 0

    cdef int bind_value(self, int at, object value) except -1:
        """As the ``sqlite3`` module binds a Python value."""
        cdef type t = type(value)
        if t is str:
            return self.bind_text(at, value)
        if value is None:
            sqlite3_bind_null(self.st, at)
        elif t is int or t is bool:
            sqlite3_bind_int64(self.st, at, <long long>value)
        elif t is float:
            sqlite3_bind_double(self.st, at, <double>value)
        elif t is bytes:
            sqlite3_bind_blob(self.st, at, <const char *>(<bytes>value), len(<bytes>value),
                              SQLITE_TRANSIENT)
        elif isinstance(value, str):
            return self.bind_text(at, str(value), True)
        elif isinstance(value, int):
            sqlite3_bind_int64(self.st, at, <long long>value)
        elif isinstance(value, float):
            sqlite3_bind_double(self.st, at, <double>value)
        else:
            raise _sqlite3.ProgrammingError(
                f"Error binding parameter {at}: type '{t.__name__}' is not supported")
        return 0

    cdef close(self):
        if self.st != NULL:
            sqlite3_finalize(self.st)
            self.st = NULL

    def __dealloc__(self):
        # (a writer whose __init__ failed half way: its connection was closed
        # with sqlite3_close_v2, which waits for its statements' finalize)
        self.close()


ctypedef struct KnownSlot:
    unsigned char vid[16]
    long long visit             # created of the last first-visit candidate upserted
    long long ref               # ... first-referral candidate; LLONG_MAX: none yet


cdef long long EMPTY = LLONG_MIN     # a free slot's visit


@cython.final
cdef class KnownVisitors:
    """vid (16 bytes) -> KnownSlot, in C: an open-addressed table of twice
    ``most`` slots, emptied when it holds ``most``. No Python object per
    visitor (a dict of them cost more than it saved when every visitor is
    new). The table is at most half full, and a slot is found by a hash of
    the vid keyed at random per process, so vids a client chooses (its
    cookie) cannot be picked to pile up in one run of slots."""
    cdef KnownSlot *slots
    cdef size_t mask
    cdef uint64_t seed
    cdef Py_ssize_t most, count

    def __cinit__(self, Py_ssize_t most):
        cdef size_t size = 8
        while size < 2 * <size_t>max(most, 1):
            size *= 2
        self.slots = <KnownSlot *>calloc(size, sizeof(KnownSlot))
        if self.slots == NULL:
            raise MemoryError()
        self.mask = size - 1
        self.most = max(most, 1)
        self.seed = int.from_bytes(os.urandom(8), "little")
        self.clear()

    def __dealloc__(self):
        free(self.slots)

    cdef void clear(self) noexcept:
        cdef size_t i
        for i in range(self.mask + 1):
            self.slots[i].visit = EMPTY
        self.count = 0

    cdef KnownSlot *slot(self, const unsigned char *vid):
        """The vid's slot, made (nothing known yet) if it has none."""
        cdef uint64_t a, b, h
        cdef size_t i
        cdef KnownSlot *s
        memcpy(&a, vid, 8)
        memcpy(&b, vid + 8, 8)
        h = (a ^ self.seed) * <uint64_t>0x9E3779B97F4A7C15ULL
        h = (h ^ (h >> 31) ^ b) * <uint64_t>0xBF58476D1CE4E5B9ULL
        h ^= h >> 29
        i = h & self.mask
        while True:
            s = &self.slots[i]
            if s.visit == EMPTY:
                if self.count >= self.most:
                    self.clear()
                    return self.slot(vid)
                memcpy(s.vid, vid, 16)
                s.visit = LLONG_MAX
                s.ref = LLONG_MAX
                self.count += 1
                return s
            if memcmp(s.vid, vid, 16) == 0:
                return s
            i = (i + 1) & self.mask


cdef class BatchWriter:
    """Writes event batches into one SQLite file (see the module docstring)."""
    cdef sqlite3 *db
    cdef Stmt ev, max_n, str_get, str_put, first_visit, first_ref
    cdef list counters          # Stmt per COUNTER_TABLES entry
    cdef long long day_number
    cdef object day_text
    cdef dict dailies           # the batch's dailies: {day: {ip: Count}}
    cdef object dailies_day     # the day of dailies_now (the last event's)
    cdef dict dailies_now
    cdef readonly str path
    cdef readonly long counter_statements   # counter upserts run (one per key per batch)
    cdef readonly long firsts_skipped       # first-visit/first-referral upserts known to lose
    cdef unsigned char uuids[48]            # eid, vid, sid bytes of the row being bound
    cdef Stmt data_version
    cdef long long seen_version             # data_version when `known` was last valid
    cdef KnownVisitors known                # see _write_firsts

    def __cinit__(self):
        self.db = NULL
        self.day_number = -1
        self.seen_version = -1

    def __init__(self, path, int busy_timeout_ms=15000, int cache_kib=32768,
                 Py_ssize_t known_max=KNOWN_MAX):
        self.path = str(path)
        self.known = KnownVisitors(known_max)
        cdef bytes name = self.path.encode()
        cdef sqlite3 *db = NULL
        rc = sqlite3_open_v2(name, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL)
        if rc != SQLITE_OK:
            err = _error(db, rc) if db != NULL else _sqlite3.OperationalError(
                f"cannot open {self.path}")
            sqlite3_close_v2(db)
            raise err
        self.db = db
        sqlite3_busy_timeout(db, busy_timeout_ms)
        # FULL: each COMMIT fsyncs the WAL (the spool forgets what was committed).
        self._exec(f"PRAGMA synchronous = FULL; PRAGMA cache_size = -{int(cache_kib)}")
        self.ev = self._prepare(_EV_SQL)
        self.max_n = self._prepare("SELECT coalesce(max(n), 0) FROM ev")
        self.str_get = self._prepare("SELECT id FROM strings WHERE text = ?")
        self.str_put = self._prepare("INSERT INTO strings (text) VALUES (?)")
        self.first_visit = self._prepare(FIRST_VISITS_SQL)
        self.first_ref = self._prepare(FIRST_REFS_SQL)
        self.counters = [self._prepare(COUNTER_SQL[t]) for t in COUNTER_TABLES]
        self.data_version = self._prepare("PRAGMA data_version")

    cdef Stmt _prepare(self, str sql):
        cdef Stmt s = Stmt()
        s.prepare(self.db, sql)
        return s

    cdef int _exec(self, str sql) except -1:
        """Run ``sql`` without the GIL: BEGIN IMMEDIATE may wait up to the busy
        timeout for another process's transaction and COMMIT for the disk, and
        the store process's loop must go on meanwhile (reading, draining,
        stopping)."""
        cdef bytes text = sql.encode()
        cdef const char *c_sql = text
        cdef int rc
        with nogil:
            rc = sqlite3_exec(self.db, c_sql, NULL, NULL, NULL)
        if rc != SQLITE_OK:
            raise _error(self.db, rc)
        return 0

    def close(self):
        if self.db == NULL:
            return
        for s in self._statements():
            (<Stmt>s).close()
        sqlite3_close_v2(self.db)
        self.db = NULL

    def __dealloc__(self):
        if self.db != NULL:
            sqlite3_close_v2(self.db)    # closes once its statements are finalized

    # ---------------------------------------------------------------- a batch

    def write(self, batch, strings, bint hold=False):
        """Store ``batch`` (fanout.Batch or list of events, unique by eid) in the
        open transaction, or a new ``BEGIN IMMEDIATE`` one, and commit it unless
        ``hold`` (``commit`` then ends it, with the batches written after it);
        return how many events were new. Rolls the whole transaction back and
        re-raises on any error; ``strings`` (sqlite_model.Strings) learns the
        dictionary ids created, for the sink's own commit or rollback."""
        if self.db == NULL:
            raise _sqlite3.ProgrammingError(f"{self.path}: writer is closed")
        try:
            if sqlite3_get_autocommit(self.db):
                self._exec("BEGIN IMMEDIATE")
                self._check_known()
            landed = self._write(batch, strings)
            if not hold:
                self._exec("COMMIT")        # its WAL write and fsync: without the GIL
        except BaseException:
            self._roll_back()
            raise
        return landed

    def commit(self):
        """Commit the transaction batches were held in (none open: nothing to
        do); rolls it back and re-raises when the COMMIT fails."""
        if self.db == NULL:
            raise _sqlite3.ProgrammingError(f"{self.path}: writer is closed")
        if sqlite3_get_autocommit(self.db):
            return
        try:
            self._exec("COMMIT")
        except BaseException:
            self._roll_back()
            raise

    @property
    def in_transaction(self):
        return self.db != NULL and not sqlite3_get_autocommit(self.db)

    cdef void _roll_back(self):
        self.known.clear()                  # it may name rows rolled back
        # A row may have failed half bound: its values (some not copied, see
        # Stmt.bind_text) must not stay bound for the next batch's row.
        for s in self._statements():
            sqlite3_reset((<Stmt>s).st)
            sqlite3_clear_bindings((<Stmt>s).st)
        if not sqlite3_get_autocommit(self.db):
            sqlite3_exec(self.db, b"ROLLBACK", NULL, NULL, NULL)

    cdef list _statements(self):
        """Every statement prepared so far (all of them once __init__ returned)."""
        return [s for s in (self.ev, self.max_n, self.str_get, self.str_put, self.first_visit,
                            self.first_ref, self.data_version, *(self.counters or ()))
                if s is not None]

    cdef int _check_known(self) except -1:
        """Forget ``known`` if another connection committed since this one's last
        transaction (``tracker erase``, retention, the sink's own connection):
        it may have deleted the rows ``known`` vouches for. Called inside the
        batch's BEGIN IMMEDIATE, so nobody else writes until its COMMIT."""
        cdef int rc = sqlite3_step(self.data_version.st)
        cdef long long version = sqlite3_column_int64(self.data_version.st, 0)
        sqlite3_reset(self.data_version.st)
        if rc != SQLITE_ROW:
            raise _error(self.db, rc)
        if version != self.seen_version:
            self.known.clear()
            self.seen_version = version
        return 0

    cdef long long _base(self) except -1:
        cdef int rc = sqlite3_step(self.max_n.st)
        cdef long long base = sqlite3_column_int64(self.max_n.st, 0)
        sqlite3_reset(self.max_n.st)
        if rc != SQLITE_ROW:
            raise _error(self.db, rc)
        return base

    cdef object _write(self, object batch, object strings):
        cdef long long n = self._base()
        cdef long landed = 0
        cdef int before
        # dailies are counted by day then ip (self.dailies), not under an (ip, day)
        # key in counts: one tuple made and hashed per event less, ~0.4 µs per
        # event of the writer's ~15 (bench_writer.py, 8 rounds, 2 of 8 lower with the key)
        cdef list counts = [{} for _ in range(N_COUNTERS)]
        cdef dict ids = strings.ids
        cdef list fresh = strings.fresh
        cdef Py_ssize_t most = strings.MAX
        self.dailies = {}
        self.dailies_day = None
        for ev in batch:
            n += 1
            vid = self._bind_event(<dict?>ev, n, ids, fresh, most)   # may add strings
            before = sqlite3_total_changes(self.db)
            self.ev.run()
            if sqlite3_total_changes(self.db) == before:
                continue                     # stored already: (created, eid) exists
            landed += 1
            self._write_firsts(<dict>ev, n, vid)
            self._fan(<dict>ev, counts)
        if landed:
            self._write_counters(counts)
        return landed

    cdef object _bind_event(self, dict ev, long long n, dict ids, list fresh,
                            Py_ssize_t most):
        """Bind ``ev`` into the ev INSERT; returns its vid as _bind_uuid does."""
        cdef Stmt st = self.ev
        cdef Py_ssize_t pos = 0
        cdef PyObject *k
        cdef PyObject *v
        sqlite3_bind_int64(st.st, B_N, n)
        st.bind_value(B_CREATED, ev["created"])
        self._bind_uuid(B_EID, ev["eid"], self.uuids)
        vid = self._bind_uuid(B_VID, ev["vid"], self.uuids + 16)
        self._bind_uuid(B_SID, ev["sid"], self.uuids + 32)
        sqlite3_bind_int64(st.st, B_FIRST, 1 if ev["first"] else 0)
        cdef int at
        while PyDict_Next(ev, &pos, &k, &v):
            code = _AT.get(<object>k)
            if code is None:
                continue                    # not a column (new_visitor, ...)
            at = code
            value = <object>v
            if at > 0:
                st.bind_value(at, value)
            elif not value:
                continue
            elif at == K_URL:
                self._bind_string(B_URL, value, ids, fresh, most)
            elif at == K_LAST:
                self._bind_string(B_LAST, value, ids, fresh, most)
            elif at == K_BROWSER:
                self._bind_string(B_BROWSER, value, ids, fresh, most)
            elif at == K_PARAMS:
                st.bind_utf8(B_PARAMS, orjson.dumps(value))
            elif at == K_LATLON:
                self._bind_latlon(value)
            elif at == K_VP:
                st.bind_text(B_VP, vp_text(value), True)
        return vid

    cdef int _bind_latlon(self, object value) except -1:
        """``latlon_text(value)``, bound. orjson writes the shortest text that
        reads back as the same double, as repr does, several times faster,
        and in the same notation for magnitudes in [1e-4, 1e16) and zero
        (below, repr writes "1e-05" where orjson writes "0.00001"): the pair
        is written by orjson when both are floats in that range, by
        latlon_text otherwise. Checked against repr in test_sqlite_write."""
        cdef double lat, lon
        cdef bytes pair
        if (type(value) is list and PyList_GET_SIZE(value) == 2
                and type(<object>PyList_GET_ITEM(value, 0)) is float
                and type(<object>PyList_GET_ITEM(value, 1)) is float):
            lat = PyFloat_AS_DOUBLE(<object>PyList_GET_ITEM(value, 0))
            lon = PyFloat_AS_DOUBLE(<object>PyList_GET_ITEM(value, 1))
            if _repr_like_json(lat) and _repr_like_json(lon):
                pair = orjson.dumps(value)          # b"[lat,lon]"
                sqlite3_bind_text(self.ev.st, B_LATLON, PyBytes_AS_STRING(pair) + 1,
                                  <int>PyBytes_GET_SIZE(pair) - 2, SQLITE_TRANSIENT)
                return 0
        self.ev.bind_text(B_LATLON, latlon_text(value), True)
        return 0

    cdef object _bind_uuid(self, int at, object text, unsigned char *buf):
        """Bind a UUID's 16 bytes. Canonical text is converted into ``buf``
        (the writer's, reused only for the next row) and bound from there, not
        copied; None is returned. Other text is converted by the twin's
        uuid_bytes, and those bytes returned (to bind them again)."""
        if text is None:
            sqlite3_bind_null(self.ev.st, at)       # NOT NULL refuses, as in the twin
            return None
        if not _uuid_into(text, buf):
            raw = uuid_bytes(text)                  # raises ValueError as the twin does
            self.ev.bind_value(at, raw)
            return raw
        sqlite3_bind_blob(self.ev.st, at, buf, 16, SQLITE_STATIC)
        return None

    cdef int _bind_string(self, int at, object text, dict ids, list fresh,
                          Py_ssize_t most) except -1:
        """Bind ``text``'s id in the strings dictionary (created if new)."""
        i = ids.get(text)
        if i is None:
            i = self._string_id(text)
            if i < 0:
                i = -i
                fresh.append(text)
            if len(ids) >= most:
                ids.clear()
            ids[text] = i
        sqlite3_bind_int64(self.ev.st, at, <long long>i)
        return 0

    cdef long long _string_id(self, object text) except 0:
        """The id of ``text`` in ``strings``, negated when this call inserted it."""
        cdef Stmt get = self.str_get, put = self.str_put
        cdef int rc
        get.bind_value(1, text)
        rc = sqlite3_step(get.st)
        found = sqlite3_column_int64(get.st, 0) if rc == SQLITE_ROW else 0
        sqlite3_reset(get.st)
        sqlite3_clear_bindings(get.st)
        if rc != SQLITE_ROW and rc != SQLITE_DONE:
            raise _error(self.db, rc)
        if found:
            return found
        put.bind_value(1, text)
        put.run()
        return -sqlite3_last_insert_rowid(self.db)

    # ---------------------------------------------------------------- fan-out

    cdef int _write_firsts(self, dict ev, long long n, object vid) except -1:
        """A landed event's first-visit and first-referral candidates, upserted
        at once: each upsert keeps the earliest by (created, eid) whatever the
        order its rows come in (eids compared as stored, as 16 bytes, which
        order as their canonical text does), so no per-batch winner is kept
        in Python. ``vid`` is _bind_uuid's answer for the row's vid.

        An upsert that cannot win is not run: after one ran, the visitor's row
        is at least as early as its candidate, so ``known`` keeps that
        candidate's ``created`` per vid and a later candidate (strictly:
        a tie is left to the eids) is skipped. A returning visitor's upserts
        found their row and changed nothing (skipping them saved ~1.2 µs per
        event of the visitors mix, about one skipped upsert per event).
        ``known`` is forgotten on a rollback and when another connection
        commits (_check_known), and cleared when it reaches ``known_max``."""
        cdef long long created
        cdef KnownSlot *known
        cdef const unsigned char *key
        ref = ev.get("ref")
        first = ev["first"]
        if not first and not ref:
            return 0
        stamp = ev["created"]
        if type(stamp) is not int:
            return self._upsert_firsts(ev, n, vid, first, ref)
        created = stamp
        if vid is None:                     # converted into the row buffer
            key = self.uuids + 16
        elif type(vid) is bytes and PyBytes_GET_SIZE(vid) == 16:
            key = <const unsigned char *>PyBytes_AS_STRING(vid)
        else:                               # not a uuid's 16 bytes: not remembered
            return self._upsert_firsts(ev, n, vid, first, ref)
        known = self.known.slot(key)
        if first and created > known.visit:
            self.firsts_skipped += 1
            first = False
        if ref and created > known.ref:
            self.firsts_skipped += 1
            ref = None
        self._upsert_firsts(ev, n, vid, first, ref)
        if first:
            known.visit = created
        if ref:
            known.ref = created
        return 0

    cdef int _upsert_firsts(self, dict ev, long long n, object vid, object first,
                            object ref) except -1:
        cdef Stmt st
        if first:
            st = self.first_visit
            self._bind_vid(st, vid)
            st.bind_value(2, ev["created"])
            sqlite3_bind_int64(st.st, 3, n)
            st.run()
        if ref:
            st = self.first_ref
            self._bind_vid(st, vid)
            st.bind_value(2, ref)
            st.bind_value(3, ev["created"])
            sqlite3_bind_int64(st.st, 4, n)
            st.run()
        return 0

    cdef inline int _bind_vid(self, Stmt st, object vid) except -1:
        if vid is None:         # converted into the row buffer by _bind_uuid
            sqlite3_bind_blob(st.st, 1, self.uuids + 16, 16, SQLITE_STATIC)
        else:
            st.bind_value(1, vid)
        return 0

    cdef _fan(self, dict ev, list counts):
        """A landed event's counter increments (counted per key in ``counts``;
        dailies per day in ``self.dailies``)."""
        created = ev["created"]
        ip = ev.get("ip") or ""
        day = self._day(created)
        if day is not self.dailies_day:
            self.dailies_now = self.dailies.setdefault(day, {})
            self.dailies_day = day
        _bump(self.dailies_now, ip)
        if ip:
            _bump(counts[C_IPS], ip)
        url = ev.get("url")
        if url:
            _bump(counts[C_HITS], url)
        last = ev.get("last")
        if last:
            _bump(counts[C_REFERRERS], last)
        browser = ev.get("browser")
        if browser:
            _bump(counts[C_BROWSERS], (browser, ev.get("bhash") or ""))
        outcome = ev.get("outcome")
        if outcome:
            _bump(counts[C_OUTCOMES], (outcome, ev.get("sink") or "", url or "", day))
        if ev.get("new_visitor"):
            _bump(counts[C_COUNTERS], "vids_created")

    cdef object _day(self, object created):
        """"YYYY-MM-DD" (UTC) of ``created`` ms, as fanout.utc_day."""
        cdef long long number = created // 86_400_000
        if number != self.day_number:
            self.day_text = utc_day(created)
            self.day_number = number
        return self.day_text

    cdef _write_counters(self, list counts):
        cdef Stmt st
        cdef int i
        st = <Stmt>self.counters[C_DAILIES]
        for day, by_ip in self.dailies.items():
            for ip, total in (<dict>by_ip).items():
                st.bind_value(1, ip)
                st.bind_value(2, day)
                sqlite3_bind_int64(st.st, 3, (<Count>total).n)
                st.run()
                self.counter_statements += 1
        for i in range(N_COUNTERS):
            if i != C_DAILIES:
                self._write_counts(<Stmt>self.counters[i], <dict>counts[i])

    cdef _write_counts(self, Stmt st, dict counts):
        cdef int at
        for key, total in counts.items():
            if type(key) is tuple:
                at = 1
                for part in <tuple>key:
                    st.bind_value(at, part)
                    at += 1
            else:
                st.bind_value(1, key)
                at = 2
            sqlite3_bind_int64(st.st, at, (<Count>total).n)
            st.run()
            self.counter_statements += 1


cdef inline bint _repr_like_json(double v) noexcept:
    """repr(v) and orjson write ``v`` alike (positional notation for both)."""
    return v == 0.0 or 1e-4 <= fabs(v) < 1e16


@cython.final
cdef class Count:
    """A counter's total for one key of a batch, incremented in place (one
    dict look-up per increment, no int object made)."""
    cdef long long n


cdef inline int _bump(dict table, object key) except -1:
    cdef PyObject *found = PyDict_GetItemWithError(table, key)
    cdef Count count
    if found != NULL:
        (<Count>found).n += 1
        return 0
    count = Count.__new__(Count)
    count.n = 1
    table[key] = count
    return 0
