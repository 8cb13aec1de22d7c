"""Erasure of visitors across every configured store (``tracker erase`` and
``POST /privacy/v1/erase``): SQLite and Cassandra rows deleted, an erase
message published on NATS for whoever keeps events downstream.

What each store did comes back as one line per store, for the command to print
and the HTTP route to return. Each store is erased independently: one that is
down is reported as failed and the others are still erased; running the
erasure again (it is idempotent) finishes the job.
"""
import asyncio
import time
import uuid

import orjson

from engine.store import erase_cassandra, erase_sqlite
from engine.store.sinks.registry import build_sinks

MAX_IDS = 1000
MAX_UID_LEN = 256


class EraseRequestError(ValueError):
    """The ids to erase are malformed."""


def check_ids(vids, uids):
    """(vids as canonical text, uids), or EraseRequestError saying what is wrong."""
    vids, uids = list(vids or ()), list(uids or ())
    if not vids and not uids:
        raise EraseRequestError("nothing to erase: give at least one vid or uid")
    if len(vids) + len(uids) > MAX_IDS:
        raise EraseRequestError(f"at most {MAX_IDS} ids per erasure")
    canonical = []
    for vid in vids:
        try:
            canonical.append(str(uuid.UUID(str(vid))))
        except ValueError:
            raise EraseRequestError(f"vid {str(vid)[:60]!r} is not a UUID") from None
    for uid in uids:
        if not isinstance(uid, str) or not uid or len(uid) > MAX_UID_LEN:
            raise EraseRequestError(f"uid {str(uid)[:60]!r}: expected text of 1 to "
                                    f"{MAX_UID_LEN} characters")
    return canonical, uids


async def erase_everywhere(config, vids, uids):
    """[{"store", "where", "deleted" | "published" | "kept" | "error"}] for each Notify
    store ("kept": a store with no erasure, e.g. a Kafka topic)."""
    vids, uids = check_ids(vids, uids)
    report = []
    for sink in build_sinks(config):
        line = {"store": sink.service, "where": _where(sink)}
        try:
            line.update(await _erase_one(sink, vids, uids))
        except Exception as exc:          # one store down must not stop the others
            line["error"] = f"{type(exc).__name__}: {exc}"[:300]
        report.append(line)
    return report


def _where(sink):
    where = getattr(sink, "where", None)
    if callable(where):
        return where()
    return getattr(sink, "path", None) or getattr(sink, "subject", "") or ""


async def _erase_one(sink, vids, uids):
    if sink.service == "sqlite":
        loop = asyncio.get_running_loop()
        deleted = await loop.run_in_executor(None, erase_sqlite.erase, sink.path, vids, uids)
        return {"deleted": deleted}
    if sink.service == "cassandra":
        return {"deleted": await _erase_cassandra(sink, vids, uids)}
    if sink.service == "nats":
        return {"published": await _publish_nats(sink, vids, uids)}
    custom = getattr(sink, "erase", None)
    if custom is not None:
        return {"deleted": await custom(vids, uids)}
    return {"kept": f"the {sink.service} store has no erasure: what it holds is kept"}


async def _erase_cassandra(sink, vids, uids):
    from engine.store.sinks.cassandra.sink import make_wire
    wire = make_wire(sink)
    await wire.connect()
    try:
        return await erase_cassandra.erase(wire.query, sink.keyspace, vids, uids)
    finally:
        await wire.close()


def erase_message(vids, uids):
    """The JSON published on ``<Context>.erase``."""
    return orjson.dumps({"erase": {"vid": vids, "uid": uids},
                         "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})


async def _publish_nats(sink, vids, uids):
    from engine.store.sinks.nats import connect
    nc = await connect(sink.opts, "tracker-erase")
    try:
        subject = sink.subject + ".erase"
        await nc.publish(subject, erase_message(vids, uids))
        await nc.flush(timeout=sink.opts.timeout)
    finally:
        await nc.close()
    return subject


def format_report(report):
    """One line per store, for a terminal."""
    lines = []
    for line in report:
        head = f"{line['store']} {line['where']}:"
        if "error" in line:
            lines.append(f"{head} FAILED {line['error']}")
        elif "kept" in line:
            lines.append(f"{head} {line['kept']}")
        elif "published" in line:
            lines.append(f"{head} erase message published on {line['published']}")
        elif line["deleted"]:
            lines.append(head + " deleted " + ", ".join(
                f"{table} {n}" for table, n in sorted(line["deleted"].items())))
        else:
            lines.append(f"{head} nothing to delete")
    return "\n".join(lines)
