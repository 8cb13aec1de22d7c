"""The sink's writes over the collector's own CQL connections (``Driver: "native"``).

Why: with acsylla a request costs a statement object per write, a batch
object, a future, and a wake-up of the event loop from the C++ driver's I/O
thread; at ~3 requests and ~7 writes per event that is most of the sink's CPU
(docs/cassandra.md). Here a request is one frame built in C (_cqlframe.pyx:
values encoded as PREPARE's metadata says) on an asyncio connection driven by
the store process's own loop (native_conn.py): the frames queued in one turn
of the loop leave in one ``write``, and answers are counted, not awaited one
by one. No thread of its own.

This wire does: protocol v4 on one connection per node of the local data
centre, PREPARE on every connection it opens, EXECUTE/BATCH of the plan's
requests, token-aware routing (Murmur3; the ring from system.local and
system.peers; the next replicas when one is down), per-request timeouts,
reconnection with backoff, and the prepared SELECT of the daily limit. It
leaves to acsylla, whose session it also opens: schema statements, the
version check, the topology query — rare and off the write path. It does
no TLS and no authentication: with either configured, the sink refuses
``Driver: "native"`` (CassandraSink).
"""
import asyncio
import bisect
import time

from engine.logs import log
from engine.store.sinks.base import SinkUnavailable
from engine.store.sinks.cassandra import _cqlframe
from engine.store.sinks.cassandra.native_conn import (
    OP_ERROR, OP_PREPARE, OP_RESULT, ConnectionLost, CqlConnection, CqlError, long_string,
    parse_error, parse_prepared, parse_rows)
from engine.store.sinks.cassandra.wire_acsylla import AcsyllaWire, _days_from_civil
from engine.store.sinks.cassandra.wire_datastax import DatastaxCodec

CONSISTENCY = {"ANY": 0, "ONE": 1, "TWO": 2, "THREE": 3, "QUORUM": 4, "ALL": 5,
               "LOCAL_QUORUM": 6, "EACH_QUORUM": 7, "SERIAL": 8, "LOCAL_SERIAL": 9,
               "LOCAL_ONE": 10}
UNPREPARED = 0x2500
RECONNECT_FIRST, RECONNECT_MAX = 0.5, 10.0
TOPOLOGY_AFTER = 3                  # failed reconnections between two reads of the ring
MAX_IN_FLIGHT = 30_000              # below one connection's 32,767 streams


class NotSent(Exception):
    """The request was never written: no connection to a replica is up."""


class RequestTimeout(Exception):
    """No answer within the sink's Timeout (the request may have applied)."""


class NativeCodec(DatastaxCodec):
    """Plan values as _cqlframe.pyx encodes them: timestamps in milliseconds,
    lat/lon and viewport as sequences of their fields; uuids as their text
    (parsed in C), dates as days since the epoch."""
    uuid_as_text = True
    # Columns _cqlframe encodes as the spool record decodes them (created: int
    # ms; latlon: [lat, lon] floats; vp: [w, h] ints), which the plan need not
    # convert (DatastaxCodec.ts/point/view are Python calls, three per row)
    as_decoded = frozenset({"created", "latlon", "vp"})

    @staticmethod
    def uuid(text):
        return text

    @staticmethod
    def day(text):
        return _days_from_civil(int(text[:4]), int(text[5:7]), int(text[8:10]))


class NativeWire(AcsyllaWire):
    name = "native"
    codec = NativeCodec

    def __init__(self, settings):
        super().__init__(settings)
        self.consistency = CONSISTENCY[settings.consistency_name]
        self.serial = CONSISTENCY["LOCAL_SERIAL" if settings.consistency_name.startswith("LOCAL")
                                  else "SERIAL"]
        self.write_cql = {}             # name -> CQL, prepared on every connection
        self.frames = {}                # name -> _cqlframe.Prepared
        self.conns = {}                 # address -> CqlConnection (up)
        self.ring = Ring([], [])
        self._reconnecting = {}
        self._closing = False

    # ---- connection ---------------------------------------------------------
    async def connect(self):
        await super().connect()
        self.ring, nodes = await self._topology()
        if not await self._open_all(nodes):
            # the addresses the nodes announce are not reachable from here
            # (NAT, published ports): the contact points, without routing
            log.warning("cassandra nodes' own addresses unreachable; using Hosts unrouted",
                        nodes=nodes, driver="native")
            self.ring = Ring([], [])
            if not await self._open_all(self.s.contact_points):
                await super().close()
                raise SinkUnavailable(f"cassandra {self.s.where()}: no node answered")

    async def _open_all(self, addresses):
        """Open a connection to each address; those that fail keep trying in
        the background. True if one is up."""
        results = await asyncio.gather(*(self._open(a) for a in addresses),
                                       return_exceptions=True)
        if not self.conns:
            return False
        for address, result in zip(addresses, results):
            if isinstance(result, BaseException):
                log.warning("cassandra node not reachable yet", host=address, driver="native",
                            error=repr(result)[:200])
                self._reconnect(address)
        return True

    async def _topology(self):
        """(Ring, addresses) of the local data centre: LocalDC, else the
        contact node's own. A node listening on every interface (rpc_address
        0.0.0.0) is reached at its broadcast address, as its peers list it."""
        local = (await self.query("SELECT data_center, rpc_address, broadcast_address, tokens "
                                  "FROM system.local"))[0]
        try:
            peers = await self.query(
                "SELECT data_center, native_address AS rpc_address, tokens FROM system.peers_v2")
        except Exception:               # noqa: BLE001 - before Cassandra 4: no peers_v2
            peers = await self.query("SELECT data_center, rpc_address, tokens FROM system.peers")
        dc = self.s.local_dc or local["data_center"]
        tokens, owners = [], []
        for row in [local, *peers]:
            if row["data_center"] != dc:
                continue
            address = str(row["rpc_address"])
            if address in ("0.0.0.0", "::", "None"):
                address = str(row.get("broadcast_address"))
            for t in row["tokens"] or ():
                tokens.append(int(t))
                owners.append(address)
        return Ring(tokens, owners), sorted(set(owners))

    async def _open(self, address):
        conn = await CqlConnection.open(address, self.s.port, self.s.timeout, self._lost)
        try:
            await self._prepare_all(conn)
        except BaseException:
            conn.close()
            raise
        if self._closing:
            conn.close()
            return
        self.conns[address] = conn

    async def _prepare_all(self, conn):
        """PREPARE every statement on ``conn`` (ids are the same on every node)."""
        for name, text in self.write_cql.items():
            opcode, body = await conn.call(OP_PREPARE, long_string(text), self.s.timeout)
            if opcode == OP_ERROR:
                raise parse_error(body)
            self.frames[name] = parse_prepared(body, _cqlframe.Prepared)

    def _lost(self, conn):
        if self.conns.get(conn.host) is conn:
            del self.conns[conn.host]
            log.warning("cassandra connection lost", host=conn.host, driver="native")
        self._reconnect(conn.host)

    def _reconnect(self, address):
        if self._closing or address in self._reconnecting or address in self.conns:
            return
        self._reconnecting[address] = asyncio.get_running_loop().create_task(
            self._reconnect_loop(address))

    async def _reconnect_loop(self, address):
        delay, failures = RECONNECT_FIRST, 0
        try:
            while not self._closing and address not in self.conns:
                await asyncio.sleep(delay)
                try:
                    await self._open(address)
                    log.info("cassandra connection back", host=address, driver="native")
                except (SinkUnavailable, CqlError, asyncio.TimeoutError, OSError):
                    delay = min(delay * 2, RECONNECT_MAX)
                    failures += 1
                    if failures % TOPOLOGY_AFTER == 0 and not await self._refresh(address):
                        return
        finally:
            self._reconnecting.pop(address, None)

    async def _refresh(self, address):
        """Read the ring again (a node replaced under a new address, as a
        rescheduled container is, never comes back at the old one); connect
        to nodes new to it. False when ``address`` has left it."""
        if not self.ring.tokens:
            return True                  # unrouted: the Hosts stay what they are
        try:
            ring, nodes = await self._topology()
        except Exception as exc:         # noqa: BLE001 - the control connection is down too
            log.warning("cassandra topology not read", error=repr(exc)[:200], driver="native")
            return True
        if not nodes:
            return True
        self.ring = ring
        for new in nodes:
            self._reconnect(new)
        if address not in nodes:
            log.warning("cassandra node left the ring", host=address, driver="native")
            return False
        return True

    async def close(self):
        self._closing = True
        for task in list(self._reconnecting.values()):
            task.cancel()
        for conn in list(self.conns.values()):
            conn.close()
        self.conns.clear()
        await super().close()

    # ---- statements ---------------------------------------------------------
    async def prepare(self, statements):
        self.write_cql = dict(statements)
        for conn in list(self.conns.values()):
            await self._prepare_all(conn)

    async def select_one(self, name, values):
        """The first row (a dict) of a prepared SELECT, or None."""
        conn = next(iter(self.conns.values()), None)
        if conn is None:
            raise SinkUnavailable(f"cassandra {self.s.where()}: no connection up")
        frame = _cqlframe.select_frame(0, self.frames[name], list(values), self.consistency)
        try:
            opcode, body = await conn.call_frame(frame, self.s.timeout)
        except (asyncio.TimeoutError, ConnectionLost) as exc:
            raise SinkUnavailable(f"cassandra {conn.host}: {exc!r}"[:300]) from None
        if opcode == OP_ERROR:
            raise parse_error(body)
        rows = parse_rows(body)
        return rows[0] if rows else None

    def _reprepare(self, conn):
        """A node answered Unprepared (it restarted and lost them): prepare
        again on that connection; the request is reported not applied."""
        async def again():
            try:
                await self._prepare_all(conn)
            except (CqlError, asyncio.TimeoutError, OSError) as exc:
                log.warning("cassandra re-prepare failed", host=conn.host, error=repr(exc)[:200])
            finally:
                conn.preparing = False
        if not conn.preparing:
            conn.preparing = True
            asyncio.get_running_loop().create_task(again())

    # ---- requests -----------------------------------------------------------
    async def send(self, requests, limit):
        """Send every request; their exceptions (None: done) in order."""
        errors = [None] * len(requests)
        if requests:
            await _Sending(self, requests, errors, min(limit, MAX_IN_FLIGHT)).done
        return errors

    def route(self, request):
        """The connection to send ``request`` on: its partition's first
        replica that is up, else any node up; None when none is."""
        conns = self.conns
        if not conns:
            return None
        if len(conns) == 1 or not self.ring.tokens:
            return next(iter(conns.values()))
        w = request.writes[0]
        key = _cqlframe.routing_key(self.frames[w.table], w)
        for address in self.ring.replicas(_cqlframe.token(key)):
            conn = conns.get(address)
            if conn is not None:
                return conn
        return next(iter(conns.values()))

    @staticmethod
    def unsent(exc):
        """True when the request certainly did not reach Cassandra or was not
        applied (so a counter increment in it was not counted)."""
        if isinstance(exc, CqlError):
            return not exc.applied_maybe
        return isinstance(exc, (SinkUnavailable, NotSent, _cqlframe.CqlValueError))


class Ring:
    """Token ring of one data centre: a token's replicas, first one first."""

    def __init__(self, tokens, owners):
        pairs = sorted(zip(tokens, owners))
        self.tokens = [t for t, _ in pairs]
        self.owners = [o for _, o in pairs]
        distinct = len(set(self.owners))
        self._orders = [self._walk(i, distinct) for i in range(len(pairs))]

    def _walk(self, i, distinct):
        seen = []
        n = len(self.owners)
        for k in range(n):
            o = self.owners[(i + k) % n]
            if o not in seen:
                seen.append(o)
                if len(seen) == distinct:
                    break
        return tuple(seen)

    def replicas(self, token):
        if not self.tokens:
            return ()
        i = bisect.bisect_left(self.tokens, token)
        return self._orders[i % len(self.tokens)]


class _Sending:
    """One ``send``: at most ``limit`` requests in flight, the next started as
    each answer comes; ``done`` resolves when every request has its outcome."""

    def __init__(self, wire, requests, errors, limit):
        self.wire, self.requests, self.errors, self.limit = wire, requests, errors, limit
        self.next = 0
        self.left = len(requests)
        self.started = {}               # index -> (conn, stream, monotonic start)
        loop = asyncio.get_running_loop()
        self.done = loop.create_future()
        self.timeout = wire.s.timeout
        self._timer = loop.call_later(min(self.timeout / 4, 0.5), self._expire)
        self._pump()

    def _pump(self):
        started, requests, wire = self.started, self.requests, self.wire
        frames, cl, serial = wire.frames, wire.consistency, wire.serial
        now = time.monotonic()
        while len(started) < self.limit and self.next < len(requests):
            i = self.next
            self.next += 1
            request = requests[i]
            conn = wire.route(request)
            stream = conn.take((self, i)) if conn is not None else None
            if stream is None:
                self._finish(i, NotSent(f"cassandra {wire.s.where()}: no connection up"))
                continue
            try:
                frame = _cqlframe.frame(stream, request, frames, cl, serial)
            except Exception as exc:     # noqa: BLE001 - reported for this request only
                conn.give_back(stream)
                self._finish(i, exc)
                continue
            started[i] = (conn, stream, now)
            conn.push(frame)
        if not self.left and not self.done.done():
            self._timer.cancel()
            self.done.set_result(None)

    def answer(self, i, opcode, body):
        entry = self.started.pop(i, None)
        if entry is None:
            return
        if opcode == OP_RESULT:
            self._finish(i, None)
        elif opcode is None:
            self._finish(i, body)        # the connection's exception
        else:
            exc = parse_error(body) if opcode == OP_ERROR else CqlError(
                0x000A, f"unexpected answer opcode {opcode}")
            if exc.code == UNPREPARED:
                self.wire._reprepare(entry[0])
            self._finish(i, exc)
        self._pump()

    def _finish(self, i, exc):
        self.errors[i] = exc
        self.left -= 1

    def _expire(self):
        if self.done.done():
            return
        now = time.monotonic()
        for i, (conn, stream, t0) in list(self.started.items()):
            if now - t0 > self.timeout:
                del self.started[i]
                conn.orphan(stream)
                self._finish(i, RequestTimeout(f"cassandra {conn.host}: no answer in "
                                               f"{self.timeout:g} s"))
        self._timer = asyncio.get_running_loop().call_later(min(self.timeout / 4, 0.5),
                                                            self._expire)
        self._pump()
