"""The floor under the collector's HTTP layer: a bare uvloop protocol.

    python loadtest/bare_uvloop.py PORT [TLS_PORT CERT KEY]

One process, one event loop, no parsing beyond finding the end of each
request head, no store: every request gets the same 200 (an empty body and
``Cache-Control: no-store``, as the tracker answers a tracked GET), and the
connection is closed after it when the request said ``Connection: close``.
bench_ingest.py runs it as server ``uvloop`` beside nginx and the collector,
so a mode's figure shows what uvloop's transports cost by themselves — the
part of the collector's cost no change to the collector's own code can remove.
"""
import asyncio
import signal
import ssl
import sys

import uvloop

ANSWER = (b"HTTP/1.1 200 OK\r\nServer: bare\r\nContent-Length: 0\r\n"
          b"Cache-Control: no-store, max-age=0\r\n\r\n")
CLOSING = (b"HTTP/1.1 200 OK\r\nServer: bare\r\nContent-Length: 0\r\n"
           b"Cache-Control: no-store, max-age=0\r\nConnection: close\r\n\r\n")


class Bare(asyncio.Protocol):
    __slots__ = ("transport", "pending")

    def connection_made(self, transport):
        self.transport = transport
        self.pending = b""

    def data_received(self, data):
        data = self.pending + data if self.pending else data
        start = 0
        while True:
            end = data.find(b"\r\n\r\n", start)
            if end < 0:
                break
            if data.find(b"onnection: close", start, end) >= 0:
                self.transport.write(CLOSING)
                self.transport.close()
                return
            self.transport.write(ANSWER)
            start = end + 4
        self.pending = data[start:]


async def serve(port, tls_port=None, cert=None, key=None):
    loop = asyncio.get_running_loop()
    await loop.create_server(Bare, "127.0.0.1", port, reuse_port=True, backlog=4096)
    if tls_port:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        await loop.create_server(Bare, "127.0.0.1", tls_port, ssl=context, reuse_port=True,
                                 backlog=4096)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)     # exit 0 when asked to stop
    await stop.wait()


def main(argv):
    if len(argv) not in (1, 4):
        raise SystemExit(__doc__.splitlines()[2].strip())
    port = int(argv[0])
    tls = (int(argv[1]), argv[2], argv[3]) if len(argv) == 4 else ()
    uvloop.run(serve(port, *tls))


if __name__ == "__main__":
    main(sys.argv[1:])
