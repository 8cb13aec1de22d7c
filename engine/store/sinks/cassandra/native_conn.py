"""One CQL native-protocol (v4) connection on the event loop, for wire_native.py.

A request takes a stream id with a handler, its frame (built by the caller,
_cqlframe.pyx, with that stream id) is queued, and every frame queued in one
turn of the loop leaves in one ``write``. Answers go to their handler as
``handler[0].answer(handler[1], opcode, body)``; when the connection closes,
every unanswered handler gets ``opcode None`` and a ConnectionLost.
"""
import asyncio
import struct
import uuid

from engine.logs import log
from engine.store.sinks.base import SinkUnavailable
from engine.store.sinks.cassandra import _cqlframe

OP_ERROR, OP_STARTUP, OP_READY, OP_AUTHENTICATE, OP_RESULT, OP_PREPARE = 0, 1, 2, 3, 8, 9
MAX_STREAMS = 32_768
HEADER = struct.Struct(">BBhBi")
# Error codes after which Cassandra has certainly not applied the request.
NOT_APPLIED = {0x1000: "Unavailable", 0x1001: "Overloaded", 0x1002: "IsBootstrapping",
               0x2000: "SyntaxError", 0x2100: "Unauthorized", 0x2200: "Invalid",
               0x2300: "ConfigError", 0x2500: "Unprepared"}
IN_DOUBT = {0x0000: "ServerError", 0x000A: "ProtocolError", 0x1100: "WriteTimeout",
            0x1500: "WriteFailure", 0x1003: "TruncateError", 0x1200: "ReadTimeout",
            0x1300: "ReadFailure", 0x1400: "FunctionFailure", 0x2400: "AlreadyExists"}


class CqlError(Exception):
    """Cassandra answered ERROR; ``applied_maybe`` is False when it certainly
    did not apply the request."""

    def __init__(self, code, message):
        name = NOT_APPLIED.get(code) or IN_DOUBT.get(code) or f"0x{code:04x}"
        super().__init__(f"{name}: {message}")
        self.code = code
        self.applied_maybe = code not in NOT_APPLIED


class ConnectionLost(Exception):
    """The connection closed with the request written and unanswered."""


class CqlConnection(asyncio.Protocol):
    def __init__(self, host, on_lost=None):
        self.host = host
        self.on_lost = on_lost
        self.transport = None
        self.free = list(range(MAX_STREAMS - 1, 0, -1))
        self.handlers = {}
        self.out = []
        self.inbox = bytearray()
        self.closed = False
        self.preparing = False           # a re-prepare is under way (wire_native.py)
        self._warned = set()
        self._loop = asyncio.get_running_loop()

    @classmethod
    async def open(cls, host, port, timeout, on_lost=None):
        """A connection past STARTUP; SinkUnavailable when it cannot be had."""
        loop = asyncio.get_running_loop()
        conn = cls(host, on_lost)
        try:
            await asyncio.wait_for(loop.create_connection(lambda: conn, host, port), timeout)
            opcode, body = await conn.call(OP_STARTUP, _string_map({"CQL_VERSION": "3.0.0"}),
                                           timeout)
        except (OSError, asyncio.TimeoutError, ConnectionLost) as exc:
            conn.close()
            raise SinkUnavailable(f"cassandra {host}:{port} unreachable: {exc!r}"[:300]) from None
        if opcode == OP_READY:
            return conn
        conn.close()
        if opcode == OP_AUTHENTICATE:
            raise SinkUnavailable(f"cassandra {host}:{port} asks for authentication, which "
                                  'Driver "native" does not do: use Driver "acsylla"')
        raise SinkUnavailable(f"cassandra {host}:{port} refused STARTUP: "
                              f"{parse_error(body) if opcode == OP_ERROR else opcode}")

    # ---- requests --------------------------------------------------------------
    def take(self, handler):
        """A stream id for a request answered to ``handler``; None if none is free."""
        if self.closed or not self.free:
            return None
        stream = self.free.pop()
        self.handlers[stream] = handler
        return stream

    def give_back(self, stream):
        """A stream taken whose frame was not queued."""
        if self.handlers.pop(stream, None) is not None:
            self.free.append(stream)

    def orphan(self, stream):
        """The request on ``stream`` no longer waits (it timed out); the stream
        is reused only once its answer has come, so no late answer is taken
        for another request's."""
        if stream in self.handlers:
            self.handlers[stream] = _ORPHAN

    def push(self, frame):
        if not self.out:
            self._loop.call_soon(self._flush)
        self.out.append(frame)

    def _flush(self):
        out, self.out = self.out, []
        if out and not self.closed:
            self.transport.write(b"".join(out) if len(out) > 1 else out[0])

    async def call(self, opcode, body, timeout):
        """One request awaited: (opcode, body) of the answer."""
        return await self.call_frame(HEADER.pack(4, 0, 0, opcode, len(body)) + body, timeout)

    async def call_frame(self, frame, timeout):
        """One whole frame (its stream id set here) awaited: (opcode, body)."""
        waiter = _Waiter(self._loop)
        stream = self.take((waiter, 0))
        if stream is None:
            raise ConnectionLost(f"{self.host}: closed")
        self.push(frame[:2] + stream.to_bytes(2, "big") + frame[4:])
        try:
            return await asyncio.wait_for(waiter.future, timeout)
        except asyncio.TimeoutError:
            self.orphan(stream)
            raise

    # ---- asyncio.Protocol ------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        inbox = self.inbox
        inbox += data
        at = _cqlframe.dispatch(inbox, self.handlers, self.free, self)
        if at:
            del inbox[:at]

    def answer_failed(self, exc):
        log.error("cassandra answer handler failed", host=self.host, error=repr(exc)[:300])

    def strip(self, flags, body):
        """The body without its tracing id, warnings and custom payload."""
        at = 16 if flags & 0x02 else 0
        if flags & 0x08:
            n, at = _short(body, at)
            for _ in range(n):
                w, at = _string(body, at)
                if w[:40] not in self._warned and len(self._warned) < 100:
                    self._warned.add(w[:40])     # each kind once per connection
                    log.warning("cassandra warning", host=self.host, warning=w[:300])
        if flags & 0x04:
            n, at = _short(body, at)
            for _ in range(n):
                _, at = _string(body, at)
                k, at = _int(body, at)
                at += max(k, 0)
        return body[at:]

    def connection_lost(self, exc):
        self.closed = True
        if self.on_lost is not None:     # first, so what is re-routed avoids this node
            self.on_lost(self)
        handlers, self.handlers = self.handlers, {}
        lost = ConnectionLost(f"cassandra {self.host}: connection lost ({exc!r})"[:300])
        for handler in handlers.values():
            handler[0].answer(handler[1], None, lost)

    def close(self):
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True


class _Waiter:
    def __init__(self, loop):
        self.future = loop.create_future()

    def answer(self, _, opcode, body):
        if self.future.done():
            return
        if opcode is None:
            self.future.set_exception(body)
        else:
            self.future.set_result((opcode, body))


class _Orphan:
    @staticmethod
    def answer(*_):
        pass


_ORPHAN = (_Orphan, 0)


# ---- the protocol's body readers (answers are small: plain Python) --------------
def _short(buf, at):
    return struct.unpack_from(">H", buf, at)[0], at + 2


def _int(buf, at):
    return struct.unpack_from(">i", buf, at)[0], at + 4


def _string(buf, at):
    n, at = _short(buf, at)
    return bytes(buf[at:at + n]).decode("utf-8", "replace"), at + n


def _option(buf, at):
    """A type option -> an int (native type) or a tuple (_cqlframe.pyx)."""
    code, at = _short(buf, at)
    if code == 0x0000:
        name, at = _string(buf, at)
        return ("custom", name), at
    if code in (0x0020, 0x0022):
        inner, at = _option(buf, at)
        return ("list" if code == 0x0020 else "set", inner), at
    if code == 0x0021:
        k, at = _option(buf, at)
        v, at = _option(buf, at)
        return ("map", k, v), at
    if code in (0x0030, 0x0031):
        if code == 0x0030:
            _, at = _string(buf, at)     # keyspace
            _, at = _string(buf, at)     # type name
        n, at = _short(buf, at)
        fields = []
        for _ in range(n):
            if code == 0x0030:
                _, at = _string(buf, at)
            t, at = _option(buf, at)
            fields.append(t)
        return ("udt" if code == 0x0030 else "tuple", tuple(fields)), at
    return code, at


def parse_prepared(body, prepared_class):
    """RESULT Prepared (v4) -> prepared_class(id, types, partition key indices)."""
    kind, at = _int(body, 0)
    if kind != 4:
        raise CqlError(0x000A, f"expected a Prepared result, got kind {kind}")
    n, at = _short(body, at)
    pid = bytes(body[at:at + n])
    at += n
    flags, at = _int(body, at)
    ncols, at = _int(body, at)
    npk, at = _int(body, at)
    pk = []
    for _ in range(npk):
        i, at = _short(body, at)
        pk.append(i)
    cols, _ = _columns(body, at, flags, ncols)
    return prepared_class(pid, tuple(t for _, t in cols), tuple(pk))


def _columns(body, at, flags, ncols):
    """[(name, type)] of a metadata's column specs, and the offset after them."""
    if flags & 0x0001:                   # one table spec for every column
        _, at = _string(body, at)
        _, at = _string(body, at)
    cols = []
    for _ in range(ncols):
        if not flags & 0x0001:
            _, at = _string(body, at)
            _, at = _string(body, at)
        name, at = _string(body, at)
        t, at = _option(body, at)
        cols.append((name, t))
    return cols, at


def parse_rows(body):
    """RESULT Rows (v4) -> a list of {column: value} (native types only)."""
    kind, at = _int(body, 0)
    if kind != 2:
        return []
    flags, at = _int(body, at)
    ncols, at = _int(body, at)
    if flags & 0x0002:                   # a paging state
        n, at = _int(body, at)
        at += max(n, 0)
    cols, at = _columns(body, at, flags, ncols)
    nrows, at = _int(body, at)
    rows = []
    for _ in range(nrows):
        row = {}
        for name, t in cols:
            n, at = _int(body, at)
            row[name] = None if n < 0 else _decode(t, bytes(body[at:at + n]))
            at += max(n, 0)
        rows.append(row)
    return rows


def _decode(t, b):
    if t in (0x0002, 0x0005, 0x0009, 0x000B, 0x0013, 0x0014):   # integers, timestamp (ms)
        return int.from_bytes(b, "big", signed=True)
    if t in (0x0001, 0x000D):
        return b.decode("utf-8", "replace")
    if t in (0x000C, 0x000F):
        return str(uuid.UUID(bytes=b))
    if t == 0x0004:
        return b != b"\x00"
    if t == 0x0007:
        return struct.unpack(">d", b)[0]
    if t == 0x0011:                      # date: days since the epoch, centred on 2^31
        return int.from_bytes(b, "big") - 2**31
    return b


def parse_error(body):
    code, at = _int(body, 0)
    message, _ = _string(body, at)
    return CqlError(code, message)


def long_string(text):
    b = text.encode()
    return struct.pack(">i", len(b)) + b


def _string_map(pairs):
    out = bytearray(struct.pack(">H", len(pairs)))
    for k, v in pairs.items():
        for s in (k, v):
            b = s.encode()
            out += struct.pack(">H", len(b)) + b
    return bytes(out)
