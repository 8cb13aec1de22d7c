"""What SQLite itself costs per stored event of the lean layout, beside what the
store's writer costs for the same events: the floor under the "with SQLite"
figures of bench_ingest.py.

    python loadtest/bench_sqlite_floor.py [--prefill 1000000] [--events 300000]
        [--batch 20000] [--mix visitors|realistic] [--cpu 1]

Two files start as one: ``--prefill`` events written through the store's sink
(store_corpus.fill_sqlite), then copied. Batch by batch, the store's stages
(bench_writer.py's: decode, user agents, de-duplication, then the sink's
write_batch_sync) write the next ``--batch`` events into file W; then the very
rows that batch added or changed in W (its ev rows, new strings, first-visit
and first-referral rows, each counter's increment) are staged in memory (TEMP
tables, not timed) and written into file F in one transaction by one
``INSERT ... SELECT`` per table, upserts as the writer's. F's figure is SQLite's
B-tree, VDBE, WAL and checkpoint work for the batch with no host code per row
(plus reading the staged rows back, printed apart as "staged scan"): no
writer that keeps this layout can spend less. CPU is the process's
(``process_time``; a COMMIT's wait for the disk is not counted), one process
pinned to ``--cpu``. At the end both files must hold the same rows in every
table: the run fails otherwise.
"""
import argparse
import hashlib
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from engine import _parse                                   # noqa: E402
from engine.store.fanout import COUNTER_TABLES              # noqa: E402
from engine.store.sinks import sqlite as sink_module        # noqa: E402
from engine.store.sinks.sqlite_model import (                # noqa: E402
    COUNTER_SQL, FIRST_REFS_SQL, FIRST_VISITS_SQL)
from loadtest import store_corpus                           # noqa: E402

COUNTERS = {t: COUNTER_TABLES[t] for t in COUNTER_SQL}   # not reqs: a view
ROW_TABLES = ("ev", "strings", "first_visits", "first_refs")


def _upsert_select(sql, columns, source, order=None):
    """The writer's ``INSERT ... VALUES (?, ...) ON CONFLICT ...`` reading
    ``columns`` of the staged table ``source`` instead (``WHERE true``:
    SQLite's parser needs it before an upsert clause)."""
    head, rest = sql.split(" VALUES ", 1)
    tail = rest.split(") ", 1)[1]
    order = f" ORDER BY {order}" if order else ""
    return f"{head} SELECT {', '.join(columns)} FROM {source} WHERE true{order} {tail}"


FIRST_SQL = [
    _upsert_select(FIRST_VISITS_SQL, ("vid", "created", "n"), "temp.s_first_visits", "n"),
    _upsert_select(FIRST_REFS_SQL, ("vid", "ref", "created", "n"), "temp.s_first_refs", "n"),
]
# Each counter's increments, staged as its key columns and d.
COUNTERS_SQL = [_upsert_select(sql, (*COUNTERS[table], "d"), f"temp.s_{table}")
                for table, sql in COUNTER_SQL.items()]


def _read_only(path):
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def _totals(conn, table, key):
    """{key tuple: total} of a counter table."""
    return {row[:-1]: row[-1]
            for row in conn.execute(f"SELECT {', '.join(key)}, total FROM {table}")}


class Floor:
    """File F: each batch's rows, staged from W, written by SQL alone."""

    def __init__(self, path, other):
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA synchronous = FULL")    # as the writer's
        self.conn.execute(f"PRAGMA cache_size = -{sink_module.CACHE_KIB}")
        self.conn.execute("PRAGMA temp_store = MEMORY")
        # Staging reads through connections of their own, so that F's writing
        # connection keeps its page cache as the writer keeps its own.
        self.w, self.f = _read_only(other), _read_only(path)

    def stage(self, base_n, base_string):
        """TEMP copies of what W's last batch added or changed (not timed)."""
        for name, key, base in (("ev", "n", base_n), ("strings", "id", base_string),
                                ("first_visits", "n", base_n), ("first_refs", "n", base_n)):
            rows = self.w.execute(f"SELECT * FROM {name} WHERE {key} > ?", (base,)).fetchall()
            self._temp(name, f"SELECT * FROM main.{name} WHERE false", rows)
        for table, key in COUNTERS.items():
            now, then = _totals(self.f, table, key), _totals(self.w, table, key)
            rows = [(*k, total - now.get(k, 0)) for k, total in then.items()
                    if total != now.get(k, 0)]
            self._temp(table, f"SELECT {', '.join(key)}, total AS d FROM main.{table} "
                       "WHERE false", rows)
        return self.conn.execute("SELECT count(*) FROM temp.s_ev").fetchone()[0]

    def _temp(self, name, shape, rows):
        c = self.conn
        c.execute(f"DROP TABLE IF EXISTS temp.s_{name}")
        c.execute(f"CREATE TEMP TABLE s_{name} AS {shape}")
        if rows:
            marks = ", ".join("?" * len(rows[0]))
            c.executemany(f"INSERT INTO temp.s_{name} VALUES ({marks})", rows)

    def close(self):
        for conn in (self.conn, self.w, self.f):
            conn.close()

    def scan(self):
        """CPU seconds to read the staged ev rows back (part of write's figure)."""
        t0 = time.process_time()
        self.conn.execute("SELECT max(n + length(eid) + length(vid) + length(sid) + "
                          "coalesce(length(params), 0) + coalesce(length(latlon), 0)) "
                          "FROM temp.s_ev").fetchone()
        return time.process_time() - t0

    def write(self):
        """CPU seconds to write the staged rows into F in one transaction, by
        part: ev (its rows, their four indexes, new strings), the first-visit
        and first-referral upserts, the counters, the COMMIT (WAL, fsync,
        checkpoint)."""
        c, clock = self.conn, time.process_time
        t0 = clock()
        c.execute("BEGIN IMMEDIATE")
        c.execute("INSERT INTO main.strings SELECT * FROM temp.s_strings ORDER BY id")
        c.execute("INSERT INTO main.ev SELECT * FROM temp.s_ev ORDER BY n")
        t1 = clock()
        for sql in FIRST_SQL:
            c.execute(sql)
        t2 = clock()
        for sql in COUNTERS_SQL:
            c.execute(sql)
        t3 = clock()
        c.execute("COMMIT")
        t4 = clock()
        return {"ev": t1 - t0, "firsts": t2 - t1, "counters": t3 - t2, "commit": t4 - t3}


def digest(path, table):
    conn = _read_only(path)
    h = hashlib.blake2b()
    width = len(conn.execute(f"PRAGMA table_info({table})").fetchall())
    order = ", ".join(str(i) for i in range(1, width + 1))
    for row in conn.execute(f"SELECT * FROM {table} ORDER BY {order}"):
        h.update(repr(row).encode())
    conn.close()
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prefill", type=int, default=1_000_000)
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--batch", type=int, default=20_000)
    ap.add_argument("--mix", choices=("visitors", "realistic"), default="visitors")
    ap.add_argument("--cpu", type=int, default=1)
    ap.add_argument("--cache-kib", type=int, default=sink_module.CACHE_KIB,
                    help="SQLite's page cache, both files (the store's: %(default)s)")
    ap.add_argument("--without", default="",
                    help="what if: F without these indexes, e.g. ev_visit (rows still compared)")
    ap.add_argument("--dir", help="where the two files go (default: a temporary directory)")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity") and args.cpu < os.cpu_count():
        os.sched_setaffinity(0, {args.cpu})
    sink_module.CACHE_KIB = args.cache_kib
    records = list(store_corpus.MIXES[args.mix](
        args.prefill + args.events, random.Random(25), _parse.TimeUUIDGen(),
        1_795_000_000_000, 15000))
    prepare = store_corpus.store_stage_prepare()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        w_path, f_path = os.path.join(tmp, "w.db"), os.path.join(tmp, "f.db")
        t0 = time.monotonic()
        store_corpus.fill_sqlite(w_path, records[:args.prefill], args.batch, prepare)
        with sqlite3.connect(w_path) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        shutil.copyfile(w_path, f_path)
        with sqlite3.connect(f_path) as conn:
            for index in filter(None, args.without.split(",")):
                conn.execute(f"DROP INDEX {index}")
        print(f"prefilled {args.prefill} events in {time.monotonic() - t0:.0f} s", flush=True)
        run(args, records[args.prefill:], prepare, w_path, f_path)
        for table in (*ROW_TABLES, *COUNTERS):
            if digest(w_path, table) != digest(f_path, table):
                sys.exit(f"table {table} differs between the writer's file and the floor's")
        print(f"both files hold the same rows in {len(ROW_TABLES) + len(COUNTERS)} tables")


def run(args, records, prepare, w_path, f_path):
    sink = store_corpus.sqlite_sink(w_path, args.batch)
    floor = Floor(f_path, w_path)
    rows = []
    clock = time.process_time
    for start in range(0, len(records), args.batch):
        base_n, base_string = floor.w.execute(
            "SELECT (SELECT coalesce(max(n), 0) FROM ev), "
            "(SELECT coalesce(max(id), 0) FROM strings)").fetchone()
        t0 = clock()
        events = prepare([_parse.decode(r) for r in records[start:start + args.batch]])
        t1 = clock()
        sink.write_batch_sync(events)
        t2 = clock()
        landed = floor.stage(base_n, base_string)
        scan, parts = floor.scan(), floor.write()
        per = 1e6 / max(landed, 1)
        row = {"stages": (t1 - t0) * per, "writer": (t2 - t1) * per,
               "floor": sum(parts.values()) * per, "scan": scan * per,
               **{k: v * per for k, v in parts.items()}}
        rows.append(row)
        print(f"file {base_n:9} events  " + _figures(row) + "  µs per event", flush=True)
    sink.close_sync()
    floor.close()
    medians = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    gap = statistics.median(r["writer"] - r["floor"] for r in rows)
    print(f"{args.mix} mix, file from {args.prefill} to {args.prefill + len(records)} events, "
          f"batches of {args.batch}; CPU µs per event, medians of {len(rows)} batches:")
    print(_figures(medians) + f"  writer - SQL alone, paired by batch {gap:+.2f}")


def _figures(row):
    return (f"decode+agents+unique {row['stages']:5.2f}  writer {row['writer']:5.2f}  "
            f"SQL alone {row['floor']:5.2f} (ev {row['ev']:4.2f}, firsts {row['firsts']:4.2f}, "
            f"counters {row['counters']:4.2f}, commit {row['commit']:4.2f}; staged scan "
            f"{row['scan']:4.2f})")


if __name__ == "__main__":
    main()
