-- Tracker SQLite schema (DESIGN.md §3). Applied by engine.sinks.sqlite.SQLiteSink
-- at start-up and by `tracker schema apply`; every statement is idempotent
-- (CREATE ... IF NOT EXISTS), so applying it twice is harmless.
--
-- Conventions, identical in every table:
--   * UUIDs (eid, vid, sid) are canonical lowercase TEXT.
--   * `created` is ISO-8601 UTC text with milliseconds, "2026-11-27T23:15:26.123Z":
--     readable in the sqlite3 shell and ordered the same as time when compared as text.
--   * a "day" is UTC 'YYYY-MM-DD'.
--   * `first` is INTEGER 0/1, `latlon` TEXT "lat,lon", `vp` TEXT "WxH",
--     `params` a JSON object as TEXT ('{}' when empty).
--   * row tables other than events keep the `eid` of the event that last won the
--     row, so the winner between two events with the same `created` is decided by
--     (created, eid): the outcome does not depend on the order batches arrive in.
--   * counter tables have an INTEGER `total`; the sink coalesces a batch in memory and
--     writes `total = total + n` once per distinct key. Counters are only incremented
--     for events whose eid was not already stored, so replaying a batch (spool,
--     retries) never double-counts.
--
-- The sink (engine/sinks/sqlite.py) writes everything from `events` to `outcomes`
-- and counters.vids_created, all in one transaction per batch.

-- events: every event, one column per field of engine/event.FIELD_TYPES.
-- Inserted with INSERT OR IGNORE: UNIQUE(eid) makes a replayed event a no-op.
CREATE TABLE IF NOT EXISTS events (
    eid      TEXT NOT NULL,
    vid      TEXT NOT NULL,
    sid      TEXT NOT NULL,
    created  TEXT NOT NULL,
    duration INTEGER,
    score    REAL,
    first    INTEGER NOT NULL DEFAULT 0,
    latlon   TEXT,
    vp       TEXT,
    params   TEXT NOT NULL DEFAULT '{}',
    uid      TEXT,
    app      TEXT,
    last     TEXT,
    url      TEXT,
    ip       TEXT,
    ptype    TEXT,
    bhash    TEXT,
    auth     TEXT,
    xid      TEXT,
    split    TEXT,
    ename    TEXT,
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
    ref      TEXT,
    aff      TEXT,
    browser  TEXT,
    device   TEXT,
    os       TEXT,
    tz       TEXT,
    outcome  TEXT,
    username TEXT,
    PRIMARY KEY (vid, sid, created, eid),
    UNIQUE (eid)
);

-- visitors: written by the sink for events with first = 1.
-- First write wins: the row holds the EARLIEST such event of the visitor
-- (by created, then eid), whatever order batches arrive in.
CREATE TABLE IF NOT EXISTS visitors (
    vid      TEXT NOT NULL PRIMARY KEY,
    created  TEXT NOT NULL,
    eid      TEXT NOT NULL,
    sid      TEXT,
    uid      TEXT,
    app      TEXT,
    ip       TEXT,
    latlon   TEXT,
    url      TEXT,
    last     TEXT,
    ref      TEXT,
    aff      TEXT,
    source   TEXT,
    medium   TEXT,
    campaign TEXT,
    term     TEXT,
    country  TEXT,
    culture  TEXT,
    browser  TEXT,
    bhash    TEXT,
    device   TEXT,
    os       TEXT,
    tz       TEXT,
    vp       TEXT,
    params   TEXT
);

-- sessions: written by the sink for events with first = 1, keyed (vid, sid).
-- First write wins, as visitors (earliest by created, then eid).
CREATE TABLE IF NOT EXISTS sessions (
    vid      TEXT NOT NULL,
    sid      TEXT NOT NULL,
    created  TEXT NOT NULL,
    eid      TEXT NOT NULL,
    uid      TEXT,
    app      TEXT,
    ip       TEXT,
    latlon   TEXT,
    url      TEXT,
    last     TEXT,
    ref      TEXT,
    aff      TEXT,
    source   TEXT,
    medium   TEXT,
    campaign TEXT,
    term     TEXT,
    country  TEXT,
    culture  TEXT,
    browser  TEXT,
    bhash    TEXT,
    device   TEXT,
    os       TEXT,
    tz       TEXT,
    vp       TEXT,
    params   TEXT,
    PRIMARY KEY (vid, sid)
);

-- nodes: every event, keyed (vid, ip): the addresses a visitor was seen from.
-- The row keeps the LATEST event from that address (created = last seen).
CREATE TABLE IF NOT EXISTS nodes (
    vid     TEXT NOT NULL,
    ip      TEXT NOT NULL,
    created TEXT NOT NULL,
    eid     TEXT NOT NULL,
    sid     TEXT,
    uid     TEXT,
    PRIMARY KEY (vid, ip)
);

-- locations: events with latlon, keyed (vid, latlon). Keeps the LATEST event
-- at that position (created = last seen there).
CREATE TABLE IF NOT EXISTS locations (
    vid     TEXT NOT NULL,
    latlon  TEXT NOT NULL,
    created TEXT NOT NULL,
    eid     TEXT NOT NULL,
    sid     TEXT,
    uid     TEXT,
    ip      TEXT,
    country TEXT,
    PRIMARY KEY (vid, latlon)
);

-- aliases: events with uid, keyed (vid, uid): the user ids a visitor used.
-- Keeps the EARLIEST event linking the two (created = first linked).
CREATE TABLE IF NOT EXISTS aliases (
    vid     TEXT NOT NULL,
    uid     TEXT NOT NULL,
    created TEXT NOT NULL,
    eid     TEXT NOT NULL,
    sid     TEXT,
    PRIMARY KEY (vid, uid)
);

-- users: the same link as aliases, keyed the other way round (uid, vid):
-- the visitors (devices / browsers) of a user id. Earliest event wins.
CREATE TABLE IF NOT EXISTS users (
    uid     TEXT NOT NULL,
    vid     TEXT NOT NULL,
    created TEXT NOT NULL,
    eid     TEXT NOT NULL,
    sid     TEXT,
    PRIMARY KEY (uid, vid)
);

-- usernames: events with username, keyed (username, vid). Earliest event wins.
CREATE TABLE IF NOT EXISTS usernames (
    username TEXT NOT NULL,
    vid      TEXT NOT NULL,
    created  TEXT NOT NULL,
    eid      TEXT NOT NULL,
    uid      TEXT,
    sid      TEXT,
    PRIMARY KEY (username, vid)
);

-- referrals: events with ref, keyed (vid). First write wins (the EARLIEST
-- referring event is the visitor's referrer), as visitors.
CREATE TABLE IF NOT EXISTS referrals (
    vid     TEXT NOT NULL PRIMARY KEY,
    ref     TEXT NOT NULL,
    created TEXT NOT NULL,
    eid     TEXT NOT NULL,
    sid     TEXT,
    uid     TEXT,
    url     TEXT,
    last    TEXT,
    source  TEXT,
    medium  TEXT,
    campaign TEXT
);

-- affiliates: events with aff, keyed (vid). Last touch: the row keeps the
-- LATEST affiliate event of the visitor (by created, then eid).
CREATE TABLE IF NOT EXISTS affiliates (
    vid     TEXT NOT NULL PRIMARY KEY,
    aff     TEXT NOT NULL,
    created TEXT NOT NULL,
    eid     TEXT NOT NULL,
    sid     TEXT,
    uid     TEXT,
    url     TEXT,
    last    TEXT
);

-- ---------------------------------------------------------------- counters
-- All written by the sink as `total = total + n` (coalesced per batch).

-- dailies: every event, events per client address per UTC day of created.
CREATE TABLE IF NOT EXISTS dailies (
    ip    TEXT NOT NULL,
    day   TEXT NOT NULL,
    total INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (ip, day)
);

-- ips: events per client address (events with ip).
CREATE TABLE IF NOT EXISTS ips (
    ip    TEXT NOT NULL PRIMARY KEY,
    total INTEGER NOT NULL DEFAULT 0
);

-- reqs: events per visitor (every event).
CREATE TABLE IF NOT EXISTS reqs (
    vid   TEXT NOT NULL PRIMARY KEY,
    total INTEGER NOT NULL DEFAULT 0
);

-- hits: events per url (events with url).
CREATE TABLE IF NOT EXISTS hits (
    url   TEXT NOT NULL PRIMARY KEY,
    total INTEGER NOT NULL DEFAULT 0
);

-- referrers: events per referring page, i.e. the event's `last` (events with last).
CREATE TABLE IF NOT EXISTS referrers (
    url   TEXT NOT NULL PRIMARY KEY,
    total INTEGER NOT NULL DEFAULT 0
);

-- browsers: events per user agent and its hash (events with browser; bhash '' if absent).
CREATE TABLE IF NOT EXISTS browsers (
    browser TEXT NOT NULL,
    bhash   TEXT NOT NULL,
    total   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (browser, bhash)
);

-- outcomes: events with outcome, per (outcome, sink or '', url or '', UTC day of created).
CREATE TABLE IF NOT EXISTS outcomes (
    outcome TEXT NOT NULL,
    sink    TEXT NOT NULL,
    url     TEXT NOT NULL,
    created TEXT NOT NULL,
    total   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (outcome, sink, url, created)
);

-- counters: named counters. The sink adds 'vids_created' (+1 per event carrying
-- new_visitor); the NATS consumer adds `tic.count.>` messages.
CREATE TABLE IF NOT EXISTS counters (
    id    TEXT NOT NULL PRIMARY KEY,
    total INTEGER NOT NULL DEFAULT 0
);

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
