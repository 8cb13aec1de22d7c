"""Read the stack's stores from inside the swarm's network.

Run in a collector container, with the interpreter and drivers of its image
(cassandra-driver, nats-py), as ``python - COMMAND < inside.py``; prints one
JSON object. The hosts, keyspace, subject and stream are the collector's own
config (/etc/tracker/config.json, the stack's Swarm config). Commands:

  status   Cassandra nodes up (as the driver sees them) and the JetStream
           stream's state: messages, leader, replicas and whether each is
           current (null before the collectors have made the stream)
  events   every event's marker (params "mk") with how often it is stored, in
           Cassandra (events table, read at LOCAL_QUORUM) and in the stream;
           and the reqs counters (events per visitor)
  writes   per Cassandra node, local (replica) writes and coordinated writes
           of the keyspace since the node started (system_views)
"""
import asyncio
import collections
import json
import sys
import time

CONFIG = "/etc/tracker/config.json"


def notify(service):
    with open(CONFIG) as fh:
        entries = json.load(fh)["Notify"]
    return next(e for e in entries if e["Service"] == service)


def cassandra_session():
    from cassandra import ConsistencyLevel
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import DCAwareRoundRobinPolicy
    entry = notify("cassandra")
    profile = ExecutionProfile(
        load_balancing_policy=DCAwareRoundRobinPolicy(local_dc=entry.get("LocalDC")),
        consistency_level=ConsistencyLevel.LOCAL_QUORUM, request_timeout=60)
    cluster = Cluster(entry["Hosts"], execution_profiles={EXEC_PROFILE_DEFAULT: profile},
                      connect_timeout=10)
    return cluster, cluster.connect(), entry.get("Context") or "tracker"


async def stream_state(with_markers):
    import nats
    entry = notify("nats")
    nc = await nats.connect([h if "://" in h else f"nats://{h}" for h in entry["Hosts"]],
                            connect_timeout=5, max_reconnect_attempts=3)
    try:
        import nats.js.errors
        js = nc.jetstream()
        try:
            info = await js.stream_info(entry["Stream"])
        except nats.js.errors.NotFoundError:
            return None         # the collectors make it on their first events
        cluster = info.cluster
        state = {"messages": info.state.messages,
                 "leader": cluster.leader if cluster else None,
                 "replicas": [{"name": r.name, "current": r.current, "lag": r.lag}
                              for r in (cluster.replicas or [])] if cluster else []}
        if with_markers:
            state["markers"] = await stream_markers(js, entry, info.state.messages)
        return state
    finally:
        await nc.close()


async def stream_markers(js, entry, total):
    """{marker: times in the stream}, read with an ordered consumer."""
    counts = collections.Counter()
    sub = await js.subscribe(entry["Context"], stream=entry["Stream"], ordered_consumer=True)
    try:
        for _ in range(total):
            msg = await sub.next_msg(timeout=30)
            counts[json.loads(msg.data).get("params", {}).get("mk")] += 1
    finally:
        await sub.unsubscribe()
    return counts


def status():
    cluster, _, _ = cassandra_session()
    try:
        up = sorted(h.address for h in cluster.metadata.all_hosts() if h.is_up)
    finally:
        cluster.shutdown()
    return {"cassandra_up": up, "stream": asyncio.run(stream_state(False))}


def events():
    cluster, session, ks = cassandra_session()
    try:
        rows = session.execute(f"SELECT params FROM {ks}.events")
        stored = collections.Counter((r.params or {}).get("mk") for r in rows)
        reqs = {str(r.vid): r.total for r in session.execute(f"SELECT vid, total FROM {ks}.reqs")}
        try:        # every replica merged (a diagnostic: needs all three nodes up)
            from cassandra import ConsistencyLevel
            from cassandra.query import SimpleStatement
            reqs_all = {str(r.vid): r.total for r in session.execute(SimpleStatement(
                f"SELECT vid, total FROM {ks}.reqs", consistency_level=ConsistencyLevel.ALL))}
        except Exception as exc:          # noqa: BLE001 - reported, not fatal
            reqs_all = {"error": repr(exc)[:200]}
    finally:
        cluster.shutdown()
    stream = asyncio.run(stream_state(True)) or {"markers": {}, "messages": 0}
    return {"cassandra": stored, "reqs": reqs, "reqs_all": reqs_all, "stream": stream["markers"],
            "stream_messages": stream["messages"]}


def writes():
    """A node that does not answer (a pause under load) is asked again; one
    that still does not is left out, and the caller sees it missing."""
    cluster, session, ks = cassandra_session()
    try:
        out = {}
        for host in cluster.metadata.all_hosts():
            for _ in range(5):
                try:
                    out[host.address] = host_writes(session, host, ks)
                    break
                except Exception:
                    time.sleep(1)
        return out
    finally:
        cluster.shutdown()


def host_writes(session, host, ks):
    counts = {}
    for table in ("local_write_latency", "coordinator_write_latency"):
        rows = session.execute(f"SELECT keyspace_name, count FROM system_views.{table}",
                               host=host)
        counts[table] = sum(r.count for r in rows if r.keyspace_name == ks)
    return counts


if __name__ == "__main__":
    command = sys.argv[1]
    result = {"status": status, "events": events, "writes": writes}[command]()
    json.dump(result, sys.stdout)
