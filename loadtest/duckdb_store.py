"""The DuckDB candidate of issue 25, as loadtest/bench_store.py measures it.

Not a sink: the engine's embedded store is SQLite (docs/storage.md says why).
This writes the same batches with the same exactness, in DuckDB's natural
model, so the benchmark compares the two engines on the same events:

- ``ev``: every event once, appended column-wise (the batch goes in as one
  newline-delimited JSON file read by ``read_json``, DuckDB's fastest path
  from Python without pyarrow); UUIDs as UUID, ``created`` as BIGINT ms.
  A replayed event is skipped: the batch's eids already stored in its
  ``created`` range are dropped first (zone maps make that range cheap).
- counters (dailies, ips, hits, referrers, browsers, outcomes, counters)
  coalesced per batch (engine/store/fanout.py) and upserted as
  ``total = total + n`` in one statement per table;
- every row table of DESIGN.md §3 a view over ``ev`` (``arg_min`` /
  ``arg_max`` by (created, eid)): columnar scans make them cheap.

DuckDB allows one process per file that writes (and then no other process
may open it, not even to read): `tracker stats`, reports, the dashboard and
ProxyDailyLimit's look-up would have to ask the store process, or read a
snapshot it exports.
"""
import os
import tempfile

import orjson

from engine.store.fanout import Batch

TEXT = ("uid", "app", "last", "url", "ip", "ptype", "bhash", "auth", "xid", "split", "ename",
        "etyp", "ver", "sink", "targets", "country", "culture", "source", "medium", "campaign",
        "term", "ref", "aff", "browser", "device", "os", "tz", "outcome", "username")
COUNTERS = {"dailies": ("ip", "day"), "ips": ("ip",), "hits": ("url",),
            "referrers": ("url",), "browsers": ("browser", "bhash"),
            "outcomes": ("outcome", "sink", "url", "created"), "counters": ("id",)}

SCHEMA = [
    "CREATE TABLE IF NOT EXISTS ev (eid UUID NOT NULL, vid UUID NOT NULL, sid UUID NOT NULL, "
    "created BIGINT NOT NULL, duration BIGINT, score DOUBLE, first BOOLEAN, lat DOUBLE, "
    "lon DOUBLE, w BIGINT, h BIGINT, params VARCHAR, "
    + ", ".join(f"{c} VARCHAR" for c in TEXT) + ")",
    *(f"CREATE TABLE IF NOT EXISTS {t} ({', '.join(k + ' VARCHAR NOT NULL' for k in key)}, "
      f"total BIGINT NOT NULL, PRIMARY KEY ({', '.join(key)}))" for t, key in COUNTERS.items()),
    "CREATE OR REPLACE VIEW visitors AS SELECT vid, arg_min(eid, (created, eid)) AS eid, "
    "min(created) AS created FROM ev WHERE first GROUP BY vid",
    "CREATE OR REPLACE VIEW sessions AS SELECT vid, sid, arg_min(eid, (created, eid)) AS eid, "
    "min(created) AS created FROM ev WHERE first GROUP BY vid, sid",
    "CREATE OR REPLACE VIEW referrals AS SELECT vid, arg_min(ref, (created, eid)) AS ref, "
    "min(created) AS created FROM ev WHERE ref IS NOT NULL GROUP BY vid",
    "CREATE OR REPLACE VIEW aliases AS SELECT vid, uid, min(created) AS created "
    "FROM ev WHERE uid IS NOT NULL GROUP BY vid, uid",
    "CREATE OR REPLACE VIEW nodes AS SELECT vid, coalesce(ip, '') AS ip, max(created) AS created "
    "FROM ev GROUP BY vid, coalesce(ip, '')",
    "CREATE OR REPLACE VIEW reqs AS SELECT vid, count(*) AS total FROM ev GROUP BY vid",
]

_COLUMNS_JSON = ("{eid:'VARCHAR',vid:'VARCHAR',sid:'VARCHAR',created:'BIGINT',duration:'BIGINT',"
                 "score:'DOUBLE',first:'BOOLEAN',latlon:'DOUBLE[]',vp:'BIGINT[]',params:'JSON',"
                 + ",".join(f"{c}:'VARCHAR'" for c in TEXT) + "}")


class DuckDBStore:
    def __init__(self, path, threads=1):
        import duckdb
        self.path = path
        self.conn = duckdb.connect(path)
        self.conn.execute(f"SET threads = {int(threads)}")
        for statement in SCHEMA:
            self.conn.execute(statement)
        fd, self.batch_file = tempfile.mkstemp(prefix="tracker-duck-", suffix=".json",
                                               dir="/dev/shm" if os.path.isdir("/dev/shm")
                                               else None)
        os.close(fd)

    def write_batch(self, events):
        """Store a batch in one transaction; return how many events were new."""
        batch = events if isinstance(events, Batch) else Batch(events)
        if not batch:
            return 0
        c = self.conn
        c.execute("BEGIN")
        try:
            lo = min(ev["created"] for ev in batch)
            hi = max(ev["created"] for ev in batch)
            stored = {str(r[0]) for r in c.execute(
                "SELECT eid FROM ev WHERE created BETWEEN ? AND ?", (lo, hi)).fetchall()}
            if stored:
                batch = Batch([ev for ev in batch if ev["eid"] not in stored])
            if batch:
                self._append(batch)
                self._count(batch)
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return len(batch)

    def _append(self, batch):
        with open(self.batch_file, "wb") as fh:
            fh.write(b"\n".join(orjson.dumps(ev) for ev in batch))
        self.conn.execute(
            "INSERT INTO ev SELECT eid::UUID, vid::UUID, sid::UUID, created, duration, score, "
            "first, latlon[1], latlon[2], vp[1], vp[2], "
            "CASE WHEN params::VARCHAR = '{}' THEN NULL ELSE params::VARCHAR END, "
            + ", ".join(TEXT) +
            f" FROM read_json(?, format = 'newline_delimited', columns = {_COLUMNS_JSON})",
            (self.batch_file,))

    def _count(self, batch):
        counters = batch.counters
        for table, key in COUNTERS.items():
            counts = counters[table]
            if not counts:
                continue
            columns = [[k[i] for k in counts] for i in range(len(key))] + [list(counts.values())]
            unnest = ", ".join(f"unnest(${i + 1})" for i in range(len(columns)))
            self.conn.execute(
                f"INSERT INTO {table} SELECT {unnest} "
                f"ON CONFLICT DO UPDATE SET total = total + excluded.total", columns)

    def close(self):
        self.conn.execute("CHECKPOINT")
        self.conn.close()
        try:
            os.unlink(self.batch_file)
        except OSError:
            pass

    def size(self):
        return sum(os.path.getsize(p) for p in (self.path, self.path + ".wal")
                   if os.path.exists(p))


DAY_MS = 86_400_000

# The report kinds of engine/store/queries.py, in DuckDB's SQL (same meaning).
REPORTS = {
    "traffic": (
        "SELECT created // {day} AS d, count(*), count(DISTINCT vid), "
        "count(DISTINCT (vid, sid)), (SELECT count(*) FROM visitors v "
        "  WHERE v.created // {day} = d) FROM ev WHERE created >= $1 AND created < $2 "
        "GROUP BY d ORDER BY d").replace("{day}", str(DAY_MS)),
    "pages": (
        "SELECT url, count(*) AS events, count(DISTINCT vid) FROM ev "
        "WHERE created >= $1 AND created < $2 AND url IS NOT NULL "
        "GROUP BY url ORDER BY events DESC, url LIMIT 50"),
    "referrers": (
        "SELECT r.ref, count(*) AS visitors, sum(q.n) FROM referrals r "
        "JOIN (SELECT vid, count(*) AS n FROM ev GROUP BY vid) q ON q.vid = r.vid "
        "WHERE r.created >= $1 AND r.created < $2 "
        "GROUP BY r.ref ORDER BY visitors DESC, r.ref LIMIT 50"),
    "campaigns": (
        "WITH f AS (SELECT vid, arg_min(source, (created, eid)) AS source, "
        "  arg_min(medium, (created, eid)) AS medium, arg_min(campaign, (created, eid)) AS "
        "  campaign, min(created) AS created FROM ev WHERE first GROUP BY vid), "
        "c AS (SELECT DISTINCT vid FROM ev WHERE outcome IS NOT NULL) "
        "SELECT source, medium, campaign, count(*) AS visitors, count(c.vid) FROM f "
        "LEFT JOIN c ON c.vid = f.vid WHERE f.created >= $1 AND f.created < $2 "
        "AND (source IS NOT NULL OR medium IS NOT NULL OR campaign IS NOT NULL) "
        "GROUP BY ALL ORDER BY visitors DESC LIMIT 50"),
    "experiments": (
        "WITH x AS (SELECT xid, split, vid, min(created) AS t FROM ev "
        "  WHERE xid IS NOT NULL AND split IS NOT NULL AND created >= $1 AND created < $2 "
        "  GROUP BY ALL), "
        "o AS (SELECT xid, vid, max(created) AS last FROM ev "
        "  WHERE xid IS NOT NULL AND outcome IS NOT NULL GROUP BY ALL) "
        "SELECT x.xid, x.split, count(*), count(o.vid) FROM x "
        "LEFT JOIN o ON o.xid = x.xid AND o.vid = x.vid AND o.last > x.t "
        "GROUP BY ALL ORDER BY 1, 2"),
    "loops": (
        "WITH r AS (SELECT * FROM referrals), "
        "c AS (SELECT DISTINCT vid FROM ev WHERE outcome IS NOT NULL), "
        "g AS (SELECT ref, count(*) AS n FROM r GROUP BY ref) "
        "SELECT r.ref, count(*) AS brought, count(c.vid), coalesce(sum(g.n), 0) FROM r "
        "LEFT JOIN c ON c.vid = r.vid LEFT JOIN g ON g.ref = r.vid::VARCHAR "
        "WHERE r.created >= $1 AND r.created < $2 "
        "GROUP BY r.ref ORDER BY brought DESC, r.ref LIMIT 50"),
}


def funnel_sql(steps):
    """Sessions reaching each step, in order (engine/store/queries.funnel)."""
    parts = ["s AS (SELECT vid, sid, created, ename FROM ev WHERE created >= $1 AND "
             "created < $2 AND ename IN (%s))" % ", ".join(f"'{s}'" for s in steps),
             f"f0 AS (SELECT vid, sid, min(created) AS t FROM s WHERE ename = '{steps[0]}' "
             f"GROUP BY vid, sid)"]
    for k in range(1, len(steps)):
        parts.append(
            f"f{k} AS (SELECT s.vid, s.sid, min(s.created) AS t FROM s JOIN f{k - 1} p "
            f"ON p.vid = s.vid AND p.sid = s.sid AND s.created > p.t "
            f"WHERE s.ename = '{steps[k]}' GROUP BY s.vid, s.sid)")
    return ("WITH " + ", ".join(parts) + " SELECT " +
            ", ".join(f"(SELECT count(*) FROM f{k})" for k in range(len(steps))))
