"""/tr/vN/ws: events streamed over a WebSocket (wsproto does the framing).

A client that keeps a page open sends its events as they happen instead of
one request each. Frames:

- a text frame is one JSON event object, or an array of them (a batch: all
  or nothing, each event its own eid, at most ``MaxBatchEvents``);
- a binary frame is the same JSON compressed as an LZ4 frame (as the Go
  collector's browser client sends it), within ``MaxBodyBytes`` and a
  compression ratio of 100.

Every data frame is answered with one text frame once its events are in the
spool (fsynced in "spool" durability): ``{"ack": N, "events": K}``, N
counting this connection's data frames from 1, so the client knows what it
may drop; or ``{"frame": N, "error": "..."}`` when nothing of it was kept
(malformed, rate limited, the spool refusing events: resend later).
Answers go out in frame order (an error waits for the acks before it). The
per-IP rate limit takes one token per event. Pings are answered; a socket
idle for ``IdleTimeoutSeconds`` is closed (1001). Events without a ``vid``
are the cookie's visitor; without a cookie the handshake mints one and sets
it in the 101 answer.
"""
import orjson
from wsproto import ConnectionType, WSConnection
from wsproto.events import (AcceptConnection, CloseConnection, Message,
                            Ping, RejectConnection, Request, TextMessage)

from engine.errors import ParseError
from engine.http.stream import Stream
from engine.ingest.bodies import BodyRefused, inflate
from engine.parse_ref import cookie_value
from engine._parse import BatchTooLarge, batch_items

GOING_AWAY = 1001
MESSAGE_TOO_BIG = 1009


def request_bytes(req):
    """The upgrade request as wsproto reads it (httptools has parsed it)."""
    head = b"GET " + req.url + b" HTTP/1.1\r\n"
    for name, value in req.headers.items():
        head += name + b": " + value + b"\r\n"
    return head + b"\r\n"


class TrackSocket(Stream):
    def __init__(self, app, conn, req):
        self.app = app
        self.fast = app.fast
        self.conn = None
        self.registry = conn.registry
        self.ip = req.client_ip or conn.client_ip
        self.user_agent = req.headers.get(b"user-agent")
        self.accept_language = req.headers.get(b"accept-language")
        cookie = req.headers.get(b"cookie")
        self.store_ip, self.dropping = self.ip, False   # the address stored; DoNotTrack drop
        self.vid = cookie_value(cookie) if cookie is not None else None
        if app.privacy is not None:
            self._decide(app.privacy, req.headers, cookie)
        self.minted = self.vid is None
        if self.minted:
            self.vid = self.fast.new_vid().encode()
        self.ws = WSConnection(ConnectionType.SERVER)
        self.ws.receive_data(request_bytes(req))
        self.handshake = next(self.ws.events(), None)
        self.parts = []           # a message's pieces until it is finished
        self.frames = 0
        self.answers = {}         # frame -> answer not yet sent (an earlier one pends)
        self.next_answer = 1
        self.closed = False
        self.idle = conn.registry.idle_timeout
        self.deadline = conn.registry.clock + self.idle

    def _decide(self, privacy, headers, cookie):
        """IPAnonymize / DoNotTrack / ConsentCookie, once for the stream: the
        limits count the real address, the events carry the decided one."""
        decision = privacy.decide(self.ip, headers.get(b"dnt"), headers.get(b"sec-gpc"),
                                  cookie, self.user_agent, headers.get(b"origin"))
        self.store_ip, self.dropping = decision.ip, decision.drop
        if decision.vid is not None:
            self.vid = decision.vid          # cookieless: minted is False, no Set-Cookie
        elif decision.drop:
            self.vid = self.vid or b""       # nothing stored: mint no visitor either

    # ---- the Stream life cycle -------------------------------------------
    def start(self, conn):
        self.started = True
        self.conn = conn
        if not isinstance(self.handshake, Request):
            conn.transport.write(self.ws.send(RejectConnection(status_code=400)))
            conn.stream_finished(self, False)
            return
        headers = []
        if self.minted:
            headers.append((b"set-cookie", b"vid=%s; Max-Age=31536000; Path=/; SameSite=Lax%s"
                            % (self.vid, b"; Secure" if conn.tls else b"")))
        conn.transport.write(self.ws.send(AcceptConnection(extra_headers=headers)))
        self.registry.streams.add(self)

    def tunnel(self, data):
        if self.closed:
            return
        if not data:                      # the client half-closed
            self._close(None)
            return
        self.deadline = self.registry.clock + self.idle
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, Message):
                self._message(event)
            elif isinstance(event, Ping):
                self._send(event.response())
            elif isinstance(event, CloseConnection):
                self._send(event.response())
                self._close(None)
                return

    def check_deadline(self, now):
        if now >= self.deadline and not self.closed:
            self._close(GOING_AWAY)
        return self.deadline

    def close(self):
        self.closed = True
        self.registry.streams.discard(self)

    # ---- frames ----------------------------------------------------------
    def _message(self, event):
        self.parts.append(event.data)
        if not event.message_finished:
            return
        data, self.parts = self.parts, []
        self.frames += 1
        frame = self.frames
        if isinstance(event, TextMessage):
            body = "".join(data).encode()
        else:
            try:
                body = inflate(b"".join(data), b"lz4", self.app.config.max_body_bytes)
            except BodyRefused as exc:
                return self._answer(frame, {"frame": frame, "error": exc.text})
        self._frame(frame, body)

    def _frame(self, frame, body):
        try:
            parsed = orjson.loads(body)
            items = [parsed] if type(parsed) is dict else \
                batch_items(parsed, self.app.config.max_batch_events)
        except orjson.JSONDecodeError as exc:
            return self._answer(frame, {"frame": frame,
                                        "error": "malformed JSON: " + str(exc)[:80]})
        except (ParseError, BatchTooLarge) as exc:
            return self._answer(frame, {"frame": frame, "error": str(exc)})
        wait = self.fast.tokens(self.ip, len(items))
        if wait:
            return self._answer(frame, {"frame": frame, "error": "rate limited",
                                        "retry_after": wait})
        if self.dropping:                     # DoNotTrack "drop": acknowledged, kept nowhere
            return self._answer(frame, {"ack": frame, "events": len(items)})
        if not self.fast.accepting():
            return self._answer(frame, {"frame": frame, "error": "busy, retry"})
        try:
            ticket = self.fast.track_items(items, self.store_ip, self.user_agent,
                                           self.accept_language, self.vid)
        except ParseError as exc:
            return self._answer(frame, {"frame": frame, "error": str(exc)})
        count = len(items)
        ticket.add_callback(lambda ok: self._answer(frame, (
            {"ack": frame, "events": count} if ok else
            {"frame": frame, "error": "spool write failed; resend"})))

    def _answer(self, frame, obj):
        """Send ``obj`` for ``frame`` once every earlier frame is answered."""
        self.answers[frame] = obj
        while self.next_answer in self.answers:
            self._send(TextMessage(data=orjson.dumps(
                self.answers.pop(self.next_answer)).decode()))
            self.next_answer += 1

    def _send(self, event):
        if self.closed or self.conn is None or self.conn.transport.is_closing():
            return
        self.conn.transport.write(self.ws.send(event))

    def _close(self, code):
        if self.closed:
            return
        if code is not None and self.ws.state.name == "OPEN":
            self._send(CloseConnection(code=code))
        self.close()
        if self.conn is not None:
            self.conn.stream_finished(self, False)
