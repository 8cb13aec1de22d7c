"""The client address a connection records (engine/http/_connection.pyx,
from the address uvloop read when it accepted) over a real loopback socket
must be the client's own address, for IPv4, IPv6 and an IPv4 client on a
dual-stack IPv6 listener (as uvloop's ``get_extra_info("peername")`` says)."""
import asyncio
import socket

import pytest
import uvloop

from engine.http.protocol import ConnectionRegistry, HttpConnection

from test_protocol import EchoApp, Limits


def _ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


async def _peer_seen(listen_family, listen_host, connect_host):
    """(client_ip the connection recorded, peername uvloop reports, the
    client's own address)."""
    made = []

    def factory():
        made.append(HttpConnection(EchoApp(), ConnectionRegistry(Limits())))
        return made[-1]

    sock = socket.socket(listen_family, socket.SOCK_STREAM)
    if listen_family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind((listen_host, 0))
    server = await asyncio.get_running_loop().create_server(factory, sock=sock)
    reader, writer = await asyncio.open_connection(connect_host, sock.getsockname()[1])
    own = writer.get_extra_info("sockname")[0]
    writer.write(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")      # kept alive: peername still there
    answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    conn, = made
    peername = conn.transport.get_extra_info("peername")
    writer.close()
    server.close()
    assert answer.startswith(b"HTTP/1.1 200 OK")
    return conn.client_ip, peername[0], own


def test_ipv4_peer():
    ip, peername, own = uvloop.run(_peer_seen(socket.AF_INET, "127.0.0.1", "127.0.0.1"))
    assert ip == peername == own == "127.0.0.1"


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_ipv6_peer():
    ip, peername, own = uvloop.run(_peer_seen(socket.AF_INET6, "::1", "::1"))
    assert ip == peername == own == "::1"


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_ipv4_client_on_dual_stack_listener():
    ip, peername, own = uvloop.run(_peer_seen(socket.AF_INET6, "::", "127.0.0.1"))
    assert own == "127.0.0.1"
    assert ip == peername == "::ffff:127.0.0.1"
