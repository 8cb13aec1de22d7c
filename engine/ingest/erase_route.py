"""``POST /privacy/<version>/erase``: the erasure of ``tracker erase`` over HTTP,
for a support tool or a data-subject-request workflow.

Enabled by ``EraseToken``: the request must carry ``Authorization: Bearer
<token>`` (compared in constant time); without the setting the route does not
exist (404). It is served where the other operator routes are: on the admin
port when ``AdminListen`` is set, else on the public port.

Body: ``{"vid": [...], "uid": [...]}`` (either may be one string). The
erasure opens its own connections to the stores and runs as a task off the
request path (a Cassandra erasure takes a few round trips per table); the
answer is the per-store report as JSON: 200 when every store was erased, 502
when one failed (the others were still erased; the call is idempotent, so the
client retries it), 400 for a malformed body, 401 for a missing or wrong token.
"""
import asyncio
import hmac

import orjson

from engine.http import responses
from engine.http.stream import Stream
from engine.logs import log
from engine.store.erase import EraseRequestError, check_ids, erase_everywhere

JSON = b"application/json"


def _as_list(value):
    if value is None:
        return []
    return [value] if isinstance(value, str) else value


class EraseRoute:
    def __init__(self, config, date):
        self.config = config
        self.token = config.erase_token.encode()
        self.date = date

    def authorised(self, req):
        given = req.headers.get(b"authorization") or b""
        scheme, _, token = given.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.token)

    def handle(self, conn, req, keep):
        """(status, bytes or a Stream)."""
        if req.method != b"POST":
            return 405, self._json(405, {"error": "use POST"}, keep, b"Allow: POST\r\n")
        if not self.authorised(req):
            return 401, self._json(401, {"error": "a valid Authorization: Bearer token "
                                         "is required"}, keep,
                                   b'WWW-Authenticate: Bearer realm="tracker"\r\n')
        try:
            body = orjson.loads(req.body or b"{}")
            if not isinstance(body, dict):
                raise EraseRequestError('expected a JSON object {"vid": [...], "uid": [...]}')
            vids, uids = check_ids(_as_list(body.get("vid")), _as_list(body.get("uid")))
        except (orjson.JSONDecodeError, EraseRequestError, TypeError) as exc:
            return 400, self._json(400, {"error": str(exc)[:300]}, keep)
        return 202, EraseAnswer(self, vids, uids, keep)

    def _json(self, status, obj, keep, extra=b""):
        return responses.build(status, self.date, responses.NO_STORE + extra,
                               body=orjson.dumps(obj), content_type=JSON, close=not keep)


class EraseAnswer(Stream):
    """Runs the erasure as a task once it is this connection's turn to answer."""

    def __init__(self, route, vids, uids, keep):
        self.route, self.vids, self.uids, self.keep = route, vids, uids, keep
        self.task = None
        self.conn = None

    def start(self, conn):
        self.started = True
        self.conn = conn
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self):
        try:
            report = await erase_everywhere(self.route.config, self.vids, self.uids)
            status = 502 if any("error" in line for line in report) else 200
            body = {"erased": {"vid": self.vids, "uid": self.uids}, "stores": report}
        except Exception as exc:
            status, body = 500, {"error": f"{type(exc).__name__}: {exc}"[:300]}
        log.info("erasure", vids=len(self.vids), uids=len(self.uids), status=status)
        if self.conn is None:
            return                          # the client went away; the erasure still ran
        self.conn.transport.write(self.route._json(status, body, self.keep))
        self.conn.stream_finished(self, self.keep)

    def close(self):
        self.conn = None                    # let the erasure finish: it is idempotent anyway
