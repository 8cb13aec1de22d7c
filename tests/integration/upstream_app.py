"""A real HTTP upstream for the reverse-proxy tests (aiohttp, own process).

    python tests/integration/upstream_app.py PORT [CERT KEY]    (HTTPS with CERT/KEY)

Routes:
  /echo/...        any method: JSON of what arrived (method, path, query,
                   headers, body length and sha256), status from ?status=N
  /download?size=N streams N bytes of a fixed pattern (chunked, no length)
  /fixed?size=N    the same with a Content-Length
  /cookies         two Set-Cookie headers
  /slow?seconds=S  answers after S seconds
  /die?size=N      announces N bytes, sends half, closes the connection
  /ws              WebSocket echo
  /_stats          connections accepted so far
"""
import asyncio
import hashlib
import ssl
import sys

from aiohttp import WSMsgType, web

BLOCK = bytes(range(256)) * 4096       # 1 MiB
CONNECTIONS = set()


def pattern_sha256(size):
    """The sha256 of ``size`` bytes of the download pattern."""
    h = hashlib.sha256()
    full, rest = divmod(size, len(BLOCK))
    for _ in range(full):
        h.update(BLOCK)
    h.update(BLOCK[:rest])
    return h.hexdigest()


@web.middleware
async def count_connections(request, handler):
    if request.path != "/_stats":
        CONNECTIONS.add(request.transport.get_extra_info("peername"))
    return await handler(request)


async def echo(request):
    h = hashlib.sha256()
    size = 0
    async for data in request.content.iter_any():
        h.update(data)
        size += len(data)
    return web.json_response(
        {"method": request.method, "path": request.path, "query": request.query_string,
         "headers": [[k, v] for k, v in request.headers.items()],
         "body_size": size, "body_sha256": h.hexdigest()},
        status=int(request.query.get("status", 200)),
        headers={"X-Upstream": "yes"})


async def _stream(request, size, length):
    resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    if length:
        resp.content_length = size
    else:
        resp.enable_chunked_encoding()
    await resp.prepare(request)
    left = size
    while left > 0:
        piece = BLOCK[:min(left, len(BLOCK))]
        await resp.write(piece)
        left -= len(piece)
    await resp.write_eof()
    return resp


async def download(request):
    return await _stream(request, int(request.query["size"]), length=False)


async def fixed(request):
    return await _stream(request, int(request.query["size"]), length=True)


async def cookies(request):
    resp = web.Response(text="two cookies")
    resp.headers.add("Set-Cookie", "a=1; Path=/")
    resp.headers.add("Set-Cookie", "b=2; Path=/")
    return resp


async def slow(request):
    await asyncio.sleep(float(request.query["seconds"]))
    return web.Response(text="slow")


async def die(request):
    size = int(request.query["size"])
    resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    resp.content_length = size
    await resp.prepare(request)
    await resp.write(BLOCK[:size // 2])
    await asyncio.sleep(0.2)
    request.transport.abort()
    return resp


async def ws(request):
    sock = web.WebSocketResponse()
    await sock.prepare(request)
    async for msg in sock:
        if msg.type == WSMsgType.TEXT:
            await sock.send_str("echo:" + msg.data)
        elif msg.type == WSMsgType.BINARY:
            await sock.send_bytes(msg.data)
    return sock


async def stats(request):
    return web.json_response({"connections": len(CONNECTIONS)})


def main():
    app = web.Application(middlewares=[count_connections], client_max_size=1 << 40)
    app.router.add_route("*", "/echo/{tail:.*}", echo)
    for path, handler in (("/download", download), ("/fixed", fixed), ("/cookies", cookies),
                          ("/slow", slow), ("/die", die), ("/ws", ws), ("/_stats", stats)):
        app.router.add_get(path, handler)
    context = None
    if len(sys.argv) > 3:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(sys.argv[2], sys.argv[3])
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None,
                access_log=None, keepalive_timeout=75, ssl_context=context)


if __name__ == "__main__":
    main()
