"""Erasure in a Cassandra keyspace: every row of given visitors.

Cassandra deletes by partition key only, so the visitors' keys are looked up
first, through tables keyed by vid:
- ``users`` (uid -> vid) gives the visitors a uid logged in as;
- ``sessions`` (vid -> sid) gives the ``events`` partitions (vid, sid);
- ``aliases`` (vid -> uid) gives the ``users`` rows, and the events give the
  usernames for ``usernames`` (username, vid).
A session whose every event said ``first=false`` has no ``sessions`` row, and
its events are not found this way (finding them needs a full scan of
``events``); README "Privacy" says so.

Rows are counted before they are deleted: what ``tracker erase`` prints is
what existed. Counters keyed by vid (``reqs``) are deleted too; counters keyed
by address, url or day are aggregates shared with other visitors and are kept.

``query`` is a coroutine function running one CQL statement (no parameters)
and returning its rows as dicts (the sink's wire). Values are written into the
CQL as literals: vids are parsed as UUIDs, text is quoted.
"""
import uuid

VID_TABLES = ("visitors", "nodes", "locations", "aliases", "referrals", "affiliates", "reqs")


def text_literal(value):
    return "'" + str(value).replace("'", "''") + "'"


async def erase(query, keyspace, vids, uids):
    """{table: rows deleted}; idempotent."""
    ks = keyspace
    everyone = {str(uuid.UUID(v)) for v in vids}
    for uid in uids:
        for row in await query(f"SELECT vid FROM {ks}.users WHERE uid = {text_literal(uid)}"):
            everyone.add(str(row["vid"]))
    deleted = {}

    def count(table, n):
        if n:
            deleted[table] = deleted.get(table, 0) + n

    for vid in sorted(everyone):
        await _erase_visitor(query, ks, vid, set(uids), count)
    return deleted


async def _erase_visitor(query, ks, vid, uids, count):
    sids = [r["sid"] for r in await query(f"SELECT sid FROM {ks}.sessions WHERE vid = {vid}")]
    usernames = set()
    for sid in sids:
        rows = await query(f"SELECT username FROM {ks}.events WHERE vid = {vid} AND sid = {sid}")
        usernames.update(r["username"] for r in rows if r.get("username"))
        count("events", len(rows))
        await query(f"DELETE FROM {ks}.events WHERE vid = {vid} AND sid = {sid}")
    uids = uids | {r["uid"] for r in await query(
        f"SELECT uid FROM {ks}.aliases WHERE vid = {vid}")}
    for uid in sorted(uids):
        found = await query(f"SELECT vid FROM {ks}.users WHERE uid = {text_literal(uid)} "
                            f"AND vid = {vid}")
        count("users", len(found))
        await query(f"DELETE FROM {ks}.users WHERE uid = {text_literal(uid)} AND vid = {vid}")
    for name in sorted(usernames):
        found = await query(f"SELECT vid FROM {ks}.usernames WHERE username = "
                            f"{text_literal(name)} AND vid = {vid}")
        count("usernames", len(found))
        await query(f"DELETE FROM {ks}.usernames WHERE username = {text_literal(name)} "
                    f"AND vid = {vid}")
    count("sessions", len(sids))
    await query(f"DELETE FROM {ks}.sessions WHERE vid = {vid}")
    for table in VID_TABLES:
        found = await query(f"SELECT vid FROM {ks}.{table} WHERE vid = {vid}")
        count(table, len(found))
        if found:
            await query(f"DELETE FROM {ks}.{table} WHERE vid = {vid}")
