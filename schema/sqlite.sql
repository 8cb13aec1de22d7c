-- Tracker SQLite schema, the lean layout (DESIGN.md §3; docs/storage.md "The embedded
-- store"). Applied by engine/store/sinks/sqlite.py at start-up and by `tracker schema
-- apply`; every statement is idempotent (IF NOT EXISTS). A wave-1 file (real `events`,
-- `visitors`, ... tables) is migrated first: engine/store/sinks/sqlite_migrate.py.
--
-- What is stored (base tables, written by the sink):
--   ev            every event, once: the truth. Row per event, in storage order `n`.
--   strings       the dictionary of ev.url, ev.last and ev.browser (long, repeated texts).
--   first_visits  vid -> the event of its first visit (EARLIEST first=1 event).
--   first_refs    vid -> the event that referred it (EARLIEST event with ref).
--   dailies, ips, hits, referrers, browsers, outcomes, counters: counters, as in §3.
--   logs, updates, sequences: as in §3.
-- What is derived (views with §3's names and columns, for `tracker stats`, reports and
-- anyone's SQL): events, visitors, sessions, nodes, locations, aliases, users, usernames,
-- referrals, affiliates, reqs. The views present values as wave 1 stored them (UUIDs as
-- canonical lowercase text, `created` as ISO-8601 UTC text with milliseconds, `params`
-- '{}' when empty), so a query written against wave 1 reads the same rows.
--
-- Conventions of the base tables:
--   * eid, vid, sid are 16-byte BLOBs (the UUID's bytes; their order is the order of the
--     canonical text). In SQL: x'3d0be300cbd211e8aa59ffd128a54d91'.
--   * `created` is INTEGER milliseconds since the epoch, UTC.
--   * ev.url, ev.last, ev.browser are strings.id; `first` is 0/1; `latlon` TEXT "lat,lon";
--     `vp` TEXT "WxH"; `params` a JSON object as TEXT, NULL when empty.
--   * "earliest" / "latest" order events by (created, eid), whatever order they arrive in.
--   * Exactness: an event is inserted with ON CONFLICT (created, eid) DO NOTHING, and
--     only the events actually inserted are counted and fanned out, in the same
--     transaction, so a replayed batch changes nothing. (An eid is minted once, with its
--     created, in the spool record it travels in: (created, eid) is the eid.)

-- ev: one row per event, one column per field of engine/event.FIELD_TYPES.
CREATE TABLE IF NOT EXISTS ev (
    n        INTEGER PRIMARY KEY,   -- storage order; first_visits / first_refs point here
    created  INTEGER NOT NULL,
    eid      BLOB NOT NULL,
    vid      BLOB NOT NULL,
    sid      BLOB NOT NULL,
    first    INTEGER NOT NULL DEFAULT 0,
    url      INTEGER,               -- strings.id
    last     INTEGER,               -- strings.id
    browser  INTEGER,               -- strings.id
    latlon   TEXT,
    vp       TEXT,
    params   TEXT,
    ip       TEXT,
    uid      TEXT,
    ename    TEXT,
    ref      TEXT,
    bhash    TEXT,
    score    REAL,
    duration INTEGER,
    app      TEXT,
    ptype    TEXT,
    auth     TEXT,
    xid      TEXT,
    split    TEXT,
    etyp     TEXT,
    ver      TEXT,
    sink     TEXT,
    targets  TEXT,
    country  TEXT,
    culture  TEXT,
    source   TEXT,
    medium   TEXT,
    campaign TEXT,
    term     TEXT,
    aff      TEXT,
    device   TEXT,
    os       TEXT,
    tz       TEXT,
    outcome  TEXT,
    username TEXT
);
-- The eid's key (replays are skipped by it) and time ranges (reports).
CREATE UNIQUE INDEX IF NOT EXISTS ev_key ON ev (created, eid);
-- §3's events key: a visitor's and a session's events in time order (sessions, nodes,
-- aliases, ... views; funnels; per-visitor lookups).
CREATE INDEX IF NOT EXISTS ev_visit ON ev (vid, sid, created, first);
-- Only the events that carry them: experiment exposures and conversions.
CREATE INDEX IF NOT EXISTS ev_xid ON ev (xid, vid, created) WHERE xid IS NOT NULL;
CREATE INDEX IF NOT EXISTS ev_outcome ON ev (vid, created) WHERE outcome IS NOT NULL;

CREATE TABLE IF NOT EXISTS strings (
    id   INTEGER PRIMARY KEY,
    text TEXT NOT NULL UNIQUE
);

-- first_visits: the EARLIEST event with first = 1 of each visitor (the visitors view).
CREATE TABLE IF NOT EXISTS first_visits (
    vid     BLOB NOT NULL PRIMARY KEY,
    created INTEGER NOT NULL,
    n       INTEGER NOT NULL            -- ev.n
) WITHOUT ROWID;

-- first_refs: the EARLIEST event with ref of each visitor (the referrals view); ref is
-- kept here too, for the referral reports.
CREATE TABLE IF NOT EXISTS first_refs (
    vid     BLOB NOT NULL PRIMARY KEY,
    ref     TEXT NOT NULL,
    created INTEGER NOT NULL,
    n       INTEGER NOT NULL            -- ev.n
) WITHOUT ROWID;

-- ---------------------------------------------------------------- counters
-- All written by the sink as `total = total + n` (coalesced per batch), only for the
-- events a batch actually inserted. Keys are text, as in wave 1 (a day is 'YYYY-MM-DD'
-- UTC; outcomes.created is that day).

-- dailies: every event, events per client address per UTC day of created.
CREATE TABLE IF NOT EXISTS dailies (
    ip    TEXT NOT NULL,
    day   TEXT NOT NULL,
    total INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (ip, day)
) WITHOUT ROWID;

-- ips: events per client address (events with ip).
CREATE TABLE IF NOT EXISTS ips (
    ip    TEXT NOT NULL PRIMARY KEY,
    total INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- hits: events per url (events with url).
CREATE TABLE IF NOT EXISTS hits (
    url   TEXT NOT NULL PRIMARY KEY,
    total INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- referrers: events per referring page, i.e. the event's `last` (events with last).
CREATE TABLE IF NOT EXISTS referrers (
    url   TEXT NOT NULL PRIMARY KEY,
    total INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- browsers: events per user agent and its hash (events with browser; bhash '' if absent).
CREATE TABLE IF NOT EXISTS browsers (
    browser TEXT NOT NULL,
    bhash   TEXT NOT NULL,
    total   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (browser, bhash)
) WITHOUT ROWID;

-- outcomes: events with outcome, per (outcome, sink or '', url or '', UTC day of created).
CREATE TABLE IF NOT EXISTS outcomes (
    outcome TEXT NOT NULL,
    sink    TEXT NOT NULL,
    url     TEXT NOT NULL,
    created TEXT NOT NULL,
    total   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (outcome, sink, url, created)
) WITHOUT ROWID;

-- counters: named counters. The sink adds 'vids_created' (+1 per event carrying
-- new_visitor); the NATS consumer adds `tic.count.>` messages.
CREATE TABLE IF NOT EXISTS counters (
    id    TEXT NOT NULL PRIMARY KEY,
    total INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- ---------------------------------------------------------------- messages

-- logs: server log messages received on NATS `tic.log.>` (written by the consumer).
-- ldate is the UTC day, created ISO-8601 text, ltime the message time in
-- nanoseconds since the epoch (orders messages within one millisecond), id a UUID.
CREATE TABLE IF NOT EXISTS logs (
    ldate    TEXT NOT NULL,
    created  TEXT NOT NULL,
    ltime    INTEGER NOT NULL,
    id       TEXT NOT NULL,
    name     TEXT,
    host     TEXT,
    hostname TEXT,
    owner    TEXT,
    ip       TEXT,
    level    INTEGER,
    msg      TEXT,
    params   TEXT,
    PRIMARY KEY (ldate, created, ltime, id)
);

-- updates: update messages received on NATS `tic.update.>` (written by the consumer).
CREATE TABLE IF NOT EXISTS updates (
    id      TEXT NOT NULL PRIMARY KEY,
    updated TEXT,
    msg     TEXT,
    params  TEXT
);

-- sequences: named integers. Row ('DB_VER', n) is the schema version: inserted by
-- the sink at start-up when missing, and checked against config SchemaVersion.
CREATE TABLE IF NOT EXISTS sequences (
    name TEXT NOT NULL PRIMARY KEY,
    seq  INTEGER NOT NULL
);

-- ---------------------------------------------------------------- §3's tables, as views
-- Row tables: the winning event's columns, found through first_visits / first_refs or
-- grouped from ev (earliest or latest by (created, eid): min/max of
-- printf('%016x', created) || hex(eid), whose row SQLite returns with the aggregate).

CREATE VIEW IF NOT EXISTS events AS
SELECT lower(substr(hex(e.eid), 1, 8) || '-' || substr(hex(e.eid), 9, 4) || '-' || substr(hex(e.eid), 13, 4) || '-' || substr(hex(e.eid), 17, 4) || '-' || substr(hex(e.eid), 21)) AS eid,
       lower(substr(hex(e.vid), 1, 8) || '-' || substr(hex(e.vid), 9, 4) || '-' || substr(hex(e.vid), 13, 4) || '-' || substr(hex(e.vid), 17, 4) || '-' || substr(hex(e.vid), 21)) AS vid,
       lower(substr(hex(e.sid), 1, 8) || '-' || substr(hex(e.sid), 9, 4) || '-' || substr(hex(e.sid), 13, 4) || '-' || substr(hex(e.sid), 17, 4) || '-' || substr(hex(e.sid), 21)) AS sid,
       strftime('%Y-%m-%dT%H:%M:%S', e.created / 1000, 'unixepoch') || printf('.%03dZ', e.created % 1000) AS created,
       e.duration,
       e.score,
       e.first,
       e.latlon,
       e.vp,
       coalesce(e.params, '{}') AS params,
       e.uid,
       e.app,
       (SELECT text FROM strings WHERE id = e.last) AS last,
       (SELECT text FROM strings WHERE id = e.url) AS url,
       e.ip,
       e.ptype,
       e.bhash,
       e.auth,
       e.xid,
       e.split,
       e.ename,
       e.etyp,
       e.ver,
       e.sink,
       e.targets,
       e.country,
       e.culture,
       e.source,
       e.medium,
       e.campaign,
       e.term,
       e.ref,
       e.aff,
       (SELECT text FROM strings WHERE id = e.browser) AS browser,
       e.device,
       e.os,
       e.tz,
       e.outcome,
       e.username
  FROM ev e;

CREATE VIEW IF NOT EXISTS visitors AS
SELECT lower(substr(hex(e.vid), 1, 8) || '-' || substr(hex(e.vid), 9, 4) || '-' || substr(hex(e.vid), 13, 4) || '-' || substr(hex(e.vid), 17, 4) || '-' || substr(hex(e.vid), 21)) AS vid,
       strftime('%Y-%m-%dT%H:%M:%S', e.created / 1000, 'unixepoch') || printf('.%03dZ', e.created % 1000) AS created,
       lower(substr(hex(e.eid), 1, 8) || '-' || substr(hex(e.eid), 9, 4) || '-' || substr(hex(e.eid), 13, 4) || '-' || substr(hex(e.eid), 17, 4) || '-' || substr(hex(e.eid), 21)) AS eid,
       lower(substr(hex(e.sid), 1, 8) || '-' || substr(hex(e.sid), 9, 4) || '-' || substr(hex(e.sid), 13, 4) || '-' || substr(hex(e.sid), 17, 4) || '-' || substr(hex(e.sid), 21)) AS sid,
       e.uid,
       e.app,
       e.ip,
       e.latlon,
       (SELECT text FROM strings WHERE id = e.url) AS url,
       (SELECT text FROM strings WHERE id = e.last) AS last,
       e.ref,
       e.aff,
       e.source,
       e.medium,
       e.campaign,
       e.term,
       e.country,
       e.culture,
       (SELECT text FROM strings WHERE id = e.browser) AS browser,
       e.bhash,
       e.device,
       e.os,
       e.tz,
       e.vp,
       coalesce(e.params, '{}') AS params
  FROM first_visits f JOIN ev e ON e.n = f.n;

CREATE VIEW IF NOT EXISTS sessions AS
SELECT lower(substr(hex(e.vid), 1, 8) || '-' || substr(hex(e.vid), 9, 4) || '-' || substr(hex(e.vid), 13, 4) || '-' || substr(hex(e.vid), 17, 4) || '-' || substr(hex(e.vid), 21)) AS vid,
       lower(substr(hex(e.sid), 1, 8) || '-' || substr(hex(e.sid), 9, 4) || '-' || substr(hex(e.sid), 13, 4) || '-' || substr(hex(e.sid), 17, 4) || '-' || substr(hex(e.sid), 21)) AS sid,
       strftime('%Y-%m-%dT%H:%M:%S', e.created / 1000, 'unixepoch') || printf('.%03dZ', e.created % 1000) AS created,
       lower(substr(hex(e.eid), 1, 8) || '-' || substr(hex(e.eid), 9, 4) || '-' || substr(hex(e.eid), 13, 4) || '-' || substr(hex(e.eid), 17, 4) || '-' || substr(hex(e.eid), 21)) AS eid,
       e.uid,
       e.app,
       e.ip,
       e.latlon,
       (SELECT text FROM strings WHERE id = e.url) AS url,
       (SELECT text FROM strings WHERE id = e.last) AS last,
       e.ref,
       e.aff,
       e.source,
       e.medium,
       e.campaign,
       e.term,
       e.country,
       e.culture,
       (SELECT text FROM strings WHERE id = e.browser) AS browser,
       e.bhash,
       e.device,
       e.os,
       e.tz,
       e.vp,
       coalesce(e.params, '{}') AS params
  FROM (SELECT min(printf('%016x', created) || hex(eid)) AS k, n FROM ev WHERE first = 1 GROUP BY vid, sid) w
    JOIN ev e ON e.n = w.n;

CREATE VIEW IF NOT EXISTS nodes AS
SELECT lower(substr(hex(e.vid), 1, 8) || '-' || substr(hex(e.vid), 9, 4) || '-' || substr(hex(e.vid), 13, 4) || '-' || substr(hex(e.vid), 17, 4) || '-' || substr(hex(e.vid), 21)) AS vid,
       coalesce(e.ip, '') AS ip,
       strftime('%Y-%m-%dT%H:%M:%S', e.created / 1000, 'unixepoch') || printf('.%03dZ', e.created % 1000) AS created,
       lower(substr(hex(e.eid), 1, 8) || '-' || substr(hex(e.eid), 9, 4) || '-' || substr(hex(e.eid), 13, 4) || '-' || substr(hex(e.eid), 17, 4) || '-' || substr(hex(e.eid), 21)) AS eid,
       lower(substr(hex(e.sid), 1, 8) || '-' || substr(hex(e.sid), 9, 4) || '-' || substr(hex(e.sid), 13, 4) || '-' || substr(hex(e.sid), 17, 4) || '-' || substr(hex(e.sid), 21)) AS sid,
       e.uid
  FROM (SELECT max(printf('%016x', created) || hex(eid)) AS k, n FROM ev GROUP BY vid, coalesce(ip, '')) w
    JOIN ev e ON e.n = w.n;

CREATE VIEW IF NOT EXISTS locations AS
SELECT lower(substr(hex(e.vid), 1, 8) || '-' || substr(hex(e.vid), 9, 4) || '-' || substr(hex(e.vid), 13, 4) || '-' || substr(hex(e.vid), 17, 4) || '-' || substr(hex(e.vid), 21)) AS vid,
       e.latlon,
       strftime('%Y-%m-%dT%H:%M:%S', e.created / 1000, 'unixepoch') || printf('.%03dZ', e.created % 1000) AS created,
       lower(substr(hex(e.eid), 1, 8) || '-' || substr(hex(e.eid), 9, 4) || '-' || substr(hex(e.eid), 13, 4) || '-' || substr(hex(e.eid), 17, 4) || '-' || substr(hex(e.eid), 21)) AS eid,
       lower(substr(hex(e.sid), 1, 8) || '-' || substr(hex(e.sid), 9, 4) || '-' || substr(hex(e.sid), 13, 4) || '-' || substr(hex(e.sid), 17, 4) || '-' || substr(hex(e.sid), 21)) AS sid,
       e.uid,
       coalesce(e.ip, '') AS ip,
       e.country
  FROM (SELECT max(printf('%016x', created) || hex(eid)) AS k, n FROM ev WHERE latlon IS NOT NULL GROUP BY vid, latlon) w
    JOIN ev e ON e.n = w.n;

CREATE VIEW IF NOT EXISTS aliases AS
SELECT lower(substr(hex(e.vid), 1, 8) || '-' || substr(hex(e.vid), 9, 4) || '-' || substr(hex(e.vid), 13, 4) || '-' || substr(hex(e.vid), 17, 4) || '-' || substr(hex(e.vid), 21)) AS vid,
       e.uid,
       strftime('%Y-%m-%dT%H:%M:%S', e.created / 1000, 'unixepoch') || printf('.%03dZ', e.created % 1000) AS created,
       lower(substr(hex(e.eid), 1, 8) || '-' || substr(hex(e.eid), 9, 4) || '-' || substr(hex(e.eid), 13, 4) || '-' || substr(hex(e.eid), 17, 4) || '-' || substr(hex(e.eid), 21)) AS eid,
       lower(substr(hex(e.sid), 1, 8) || '-' || substr(hex(e.sid), 9, 4) || '-' || substr(hex(e.sid), 13, 4) || '-' || substr(hex(e.sid), 17, 4) || '-' || substr(hex(e.sid), 21)) AS sid
  FROM (SELECT min(printf('%016x', created) || hex(eid)) AS k, n FROM ev WHERE uid IS NOT NULL GROUP BY vid, uid) w
    JOIN ev e ON e.n = w.n;

CREATE VIEW IF NOT EXISTS users AS
SELECT e.uid,
       lower(substr(hex(e.vid), 1, 8) || '-' || substr(hex(e.vid), 9, 4) || '-' || substr(hex(e.vid), 13, 4) || '-' || substr(hex(e.vid), 17, 4) || '-' || substr(hex(e.vid), 21)) AS vid,
       strftime('%Y-%m-%dT%H:%M:%S', e.created / 1000, 'unixepoch') || printf('.%03dZ', e.created % 1000) AS created,
       lower(substr(hex(e.eid), 1, 8) || '-' || substr(hex(e.eid), 9, 4) || '-' || substr(hex(e.eid), 13, 4) || '-' || substr(hex(e.eid), 17, 4) || '-' || substr(hex(e.eid), 21)) AS eid,
       lower(substr(hex(e.sid), 1, 8) || '-' || substr(hex(e.sid), 9, 4) || '-' || substr(hex(e.sid), 13, 4) || '-' || substr(hex(e.sid), 17, 4) || '-' || substr(hex(e.sid), 21)) AS sid
  FROM (SELECT min(printf('%016x', created) || hex(eid)) AS k, n FROM ev WHERE uid IS NOT NULL GROUP BY vid, uid) w
    JOIN ev e ON e.n = w.n;

CREATE VIEW IF NOT EXISTS usernames AS
SELECT e.username,
       lower(substr(hex(e.vid), 1, 8) || '-' || substr(hex(e.vid), 9, 4) || '-' || substr(hex(e.vid), 13, 4) || '-' || substr(hex(e.vid), 17, 4) || '-' || substr(hex(e.vid), 21)) AS vid,
       strftime('%Y-%m-%dT%H:%M:%S', e.created / 1000, 'unixepoch') || printf('.%03dZ', e.created % 1000) AS created,
       lower(substr(hex(e.eid), 1, 8) || '-' || substr(hex(e.eid), 9, 4) || '-' || substr(hex(e.eid), 13, 4) || '-' || substr(hex(e.eid), 17, 4) || '-' || substr(hex(e.eid), 21)) AS eid,
       e.uid,
       lower(substr(hex(e.sid), 1, 8) || '-' || substr(hex(e.sid), 9, 4) || '-' || substr(hex(e.sid), 13, 4) || '-' || substr(hex(e.sid), 17, 4) || '-' || substr(hex(e.sid), 21)) AS sid
  FROM (SELECT min(printf('%016x', created) || hex(eid)) AS k, n FROM ev WHERE username IS NOT NULL GROUP BY username, vid) w
    JOIN ev e ON e.n = w.n;

CREATE VIEW IF NOT EXISTS referrals AS
SELECT lower(substr(hex(e.vid), 1, 8) || '-' || substr(hex(e.vid), 9, 4) || '-' || substr(hex(e.vid), 13, 4) || '-' || substr(hex(e.vid), 17, 4) || '-' || substr(hex(e.vid), 21)) AS vid,
       f.ref AS ref,
       strftime('%Y-%m-%dT%H:%M:%S', e.created / 1000, 'unixepoch') || printf('.%03dZ', e.created % 1000) AS created,
       lower(substr(hex(e.eid), 1, 8) || '-' || substr(hex(e.eid), 9, 4) || '-' || substr(hex(e.eid), 13, 4) || '-' || substr(hex(e.eid), 17, 4) || '-' || substr(hex(e.eid), 21)) AS eid,
       lower(substr(hex(e.sid), 1, 8) || '-' || substr(hex(e.sid), 9, 4) || '-' || substr(hex(e.sid), 13, 4) || '-' || substr(hex(e.sid), 17, 4) || '-' || substr(hex(e.sid), 21)) AS sid,
       e.uid,
       (SELECT text FROM strings WHERE id = e.url) AS url,
       (SELECT text FROM strings WHERE id = e.last) AS last,
       e.source,
       e.medium,
       e.campaign
  FROM first_refs f JOIN ev e ON e.n = f.n;

CREATE VIEW IF NOT EXISTS affiliates AS
SELECT lower(substr(hex(e.vid), 1, 8) || '-' || substr(hex(e.vid), 9, 4) || '-' || substr(hex(e.vid), 13, 4) || '-' || substr(hex(e.vid), 17, 4) || '-' || substr(hex(e.vid), 21)) AS vid,
       e.aff,
       strftime('%Y-%m-%dT%H:%M:%S', e.created / 1000, 'unixepoch') || printf('.%03dZ', e.created % 1000) AS created,
       lower(substr(hex(e.eid), 1, 8) || '-' || substr(hex(e.eid), 9, 4) || '-' || substr(hex(e.eid), 13, 4) || '-' || substr(hex(e.eid), 17, 4) || '-' || substr(hex(e.eid), 21)) AS eid,
       lower(substr(hex(e.sid), 1, 8) || '-' || substr(hex(e.sid), 9, 4) || '-' || substr(hex(e.sid), 13, 4) || '-' || substr(hex(e.sid), 17, 4) || '-' || substr(hex(e.sid), 21)) AS sid,
       e.uid,
       (SELECT text FROM strings WHERE id = e.url) AS url,
       (SELECT text FROM strings WHERE id = e.last) AS last
  FROM (SELECT max(printf('%016x', created) || hex(eid)) AS k, n FROM ev WHERE aff IS NOT NULL GROUP BY vid) w
    JOIN ev e ON e.n = w.n;

CREATE VIEW IF NOT EXISTS reqs AS
SELECT lower(substr(hex(vid), 1, 8) || '-' || substr(hex(vid), 9, 4) || '-' || substr(hex(vid), 13, 4) || '-' || substr(hex(vid), 17, 4) || '-' || substr(hex(vid), 21)) AS vid, count(*) AS total
  FROM ev GROUP BY ev.vid;

