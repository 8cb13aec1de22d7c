"""``ProxyDailyLimitChecker: "cassandra"``: the read behind
``engine.limits.daily.DailyLimitChecker`` (which owns the cache, the counting
and when to read): the ``dailies`` total of one IP on one day, one query.
"""
import asyncio

from engine.logs import log
from engine.store.sinks.base import SinkUnavailable
from engine.store.sinks.cassandra import cql


class CassandraDailyRead:
    """``wire`` is a callable returning a connected wire with the
    ``dailies.read`` statement prepared (None while there is none), so a
    process that does not write can have its own."""

    def __init__(self, wire):
        self.wire = wire
        self.queries = 0

    @classmethod
    def of_sink(cls, sink):
        """Read through a sink's connection (the sink writes in this process)."""
        return cls(lambda: sink.wire)

    @classmethod
    def own_session(cls, sink):
        """Read on a connection of its own, for a process that writes nothing
        (an HTTP worker): ``sink`` only lends its settings (hosts, TLS,
        timeouts, driver). The connection is made in the background on first
        use; until it is up, reads fail (the checker then lets requests
        through)."""
        from engine.store.sinks.cassandra.sink import make_wire
        state = {"wire": None, "task": None}

        async def connect():
            wire = make_wire(sink)
            try:
                await wire.connect()
                await wire.prepare({"dailies.read": cql.statements(sink.keyspace)["dailies.read"]})
            except Exception as exc:          # noqa: BLE001 - fail-open, tried again later
                log.warning("daily limit: cannot connect to cassandra", error=repr(exc)[:200])
                await wire.close()
                return
            state["wire"] = wire

        def wire():
            task = state["task"]
            if state["wire"] is None and (task is None or task.done()):
                state["task"] = asyncio.get_running_loop().create_task(connect())
            return state["wire"]
        return cls(wire)

    async def __call__(self, ip, day):
        wire = self.wire()
        if wire is None:
            raise SinkUnavailable("cassandra is not connected")
        self.queries += 1
        row = await wire.select_one("dailies.read", [ip, wire.codec.day(day)])
        return row["total"] if row else 0
