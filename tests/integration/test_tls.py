"""Local-certificate TLS: HTTPS on ProxyPortTLS, the plain port redirects,
certificate files replaced on disk are served without a restart."""
import http.client
import os
import signal
import socket
import ssl
import time
import warnings

import pytest

from conftest import free_port
from tlshelpers import MiniCA, client_context, https, served_serial, wait_https


def tls_collector(collector_factory, tmp_path, workers=2, **extra):
    ca = MiniCA()
    files = ca.write(tmp_path, "server")
    c = collector_factory({"UseLocalTLS": True, "TLSCert": files["cert"],
                           "TLSKey": files["key"], "Debug": True, **extra},
                          workers=workers, start=False)
    del c.config["TLS"]               # derived from UseLocalTLS, as a Go config has it
    c.tls_port = free_port()
    c.config["ProxyPortTLS"] = f"127.0.0.1:{c.tls_port}"
    c.write_config(c.config)
    c.ca, c.files, c.cafile = ca, files, files["ca"]
    c.start(wait=False)
    wait_https(c)
    return c


def test_https_serves_the_tracker_with_modern_defaults(collector_factory, tmp_path):
    c = tls_collector(collector_factory, tmp_path)
    conn = https(c)
    conn.request("GET", "/tr/v1/vid/3d0be300-cbd2-11e8-aa59-ffd128a54d91/ename/tls")
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 200
    assert "; Secure" in resp.getheader("Set-Cookie")       # cookies know it is TLS
    assert conn.sock.version() in ("TLSv1.2", "TLSv1.3")
    assert conn.sock.selected_alpn_protocol() == "http/1.1"
    conn.close()
    # A client that offers only TLS 1.1 (its own floor lowered, so the refusal
    # is the server's): the server ends the handshake (uvloop closes without
    # flushing the protocol_version alert, so the client may see only EOF).
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with socket.create_connection(("127.0.0.1", c.tls_port), timeout=10) as raw:
        with pytest.raises(ssl.SSLError, match="ALERT_PROTOCOL_VERSION|UNEXPECTED_EOF"):
            old.wrap_socket(raw)
    c.stop()
    assert c.rows("select ename from events") == [{"ename": "tls"}]


def redirect(c, target, host_header, method="GET"):
    """(status, Location) of a raw request on the plain port."""
    head = f"{method} {target} HTTP/1.1\r\n"
    if host_header is not None:
        head += f"Host: {host_header}\r\n"
    answer = c.raw((head + "Content-Length: 0\r\nConnection: close\r\n\r\n").encode())
    status = int(answer.split(b" ", 2)[1])
    for line in answer.split(b"\r\n"):
        if line.lower().startswith(b"location:"):
            return status, line.split(b":", 1)[1].strip().decode()
    return status, None


def test_plain_port_redirects_to_https(collector_factory, tmp_path):
    c = tls_collector(collector_factory, tmp_path)
    p = c.tls_port
    q = "/tr/v1/vid/x?utm_source=mail&a=%20b"
    assert redirect(c, q, "example.com") == (301, f"https://example.com:{p}{q}")
    assert redirect(c, q, f"Example.COM:{c.port}") == (301, f"https://example.com:{p}{q}")
    assert redirect(c, "/ping", f"127.0.0.1:{c.port}") == (301, f"https://127.0.0.1:{p}/ping")
    assert redirect(c, "/", f"[::1]:{c.port}") == (301, f"https://[::1]:{p}/")
    assert redirect(c, "/", "[2001:DB8::1]") == (301, f"https://[2001:db8::1]:{p}/")
    assert redirect(c, "/tr/v1/", "example.com", "POST") == \
        (308, f"https://example.com:{p}/tr/v1/")             # a POST stays a POST
    assert redirect(c, "http://example.com/a?b=1", "example.com") == \
        (301, f"https://example.com:{p}/a?b=1")               # absolute-form target
    # No Host (HTTP/1.0): the first of Domains; a forged Host cannot inject headers.
    answer = c.raw(b"GET /x HTTP/1.0\r\n\r\n")
    assert b"301 Moved" in answer and f"Location: https://example.com:{p}/x".encode() in answer
    assert redirect(c, "/", "evil.com\x0bX-Injected: 1")[0] == 400
    # Nothing on the plain port is tracked.
    c.stop()
    assert c.rows("select count(*) as n from events") == [{"n": 0}]


def test_redirect_followed_end_to_end(collector_factory, tmp_path):
    c = tls_collector(collector_factory, tmp_path)
    plain = http.client.HTTPConnection("localhost", c.port, timeout=10)
    plain.request("GET", "/img/v1/vid/3d0be300-cbd2-11e8-aa59-ffd128a54d91?ename=followed",
                  headers={"Host": f"localhost:{c.port}"})
    resp = plain.getresponse()
    resp.read()
    location = resp.getheader("Location")
    assert resp.status == 301 and location.startswith(f"https://localhost:{c.tls_port}/img/")
    conn = https(c)
    conn.request("GET", location.split(str(c.tls_port), 1)[1])
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Type") == "image/gif"
    resp.read()
    c.stop()
    assert c.rows("select ename from events") == [{"ename": "followed"}]


def test_replaced_certificate_is_served_without_restart(collector_factory, tmp_path):
    c = tls_collector(collector_factory, tmp_path, workers=1)
    pids = c.worker_pids()
    first = served_serial(c, c.files["ca"])
    keep = https(c)                                  # an open keep-alive connection
    keep.request("GET", "/ping")
    assert keep.getresponse().read() == b"pong"
    other = MiniCA("second test CA")
    cert, key = other.issue()
    (tmp_path / "ca2.pem").write_bytes(other.pem)
    # Key first, then certificate: in between the pair mismatches, and the
    # worker must keep serving the old one rather than break.
    with open(c.files["key"], "wb") as fh:
        fh.write(key)
    with open(c.files["cert"], "wb") as fh:
        fh.write(cert)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            second = served_serial(c, str(tmp_path / "ca2.pem"))
            break
        except ssl.SSLError:
            time.sleep(0.2)
    else:
        raise AssertionError("new certificate not served:\n" + c.logs())
    assert second != first
    keep.request("GET", "/ping")                      # the old session still works
    assert keep.getresponse().read() == b"pong"
    assert c.worker_pids() == pids
    assert '"certificate loaded"' in c.logs()


def test_reload_keeps_both_ports(collector_factory, tmp_path):
    c = tls_collector(collector_factory, tmp_path)
    before = c.worker_pids()
    c.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while '"reload done"' not in c.logs() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert '"reload done"' in c.logs()
    assert redirect(c, "/ping", "localhost")[0] == 301
    conn = https(c)
    conn.request("GET", "/ping")
    assert conn.getresponse().read() == b"pong"
    while not set(c.worker_pids()).isdisjoint(before) and time.monotonic() < deadline:
        time.sleep(0.1)                                   # old workers finish draining
    assert set(c.worker_pids()).isdisjoint(before)        # new workers serve both ports
    assert redirect(c, "/ping", "localhost")[0] == 301
    conn = https(c)
    conn.request("GET", "/ping")
    assert conn.getresponse().read() == b"pong"
    assert c.stop() == 0


def test_bad_certificate_pair_fails_the_boot(collector_factory, tmp_path):
    ca = MiniCA()
    a = ca.write(tmp_path, "a")
    b = ca.write(tmp_path, "b")
    c = collector_factory({"TLS": "local", "TLSCert": a["cert"], "TLSKey": b["key"]},
                          start=False)
    c.config["ProxyPortTLS"] = f"127.0.0.1:{free_port()}"
    c.write_config(c.config)
    c.start(wait=False)
    assert c.proc.wait(15) == 3
    assert "the private key does not belong to the certificate" in c.logs()
    os.remove(b["key"])
    c.config["TLSKey"] = b["key"]
    c.write_config(c.config)
    c.start(wait=False)
    assert c.proc.wait(15) == 3
    assert f"cannot read {b['key']}: No such file or directory" in c.logs()


def test_a_connection_whose_handshake_ends_during_the_drain_is_drained_too(
        collector_factory, tmp_path):
    """Accepted before SIGTERM, TLS handshake finished after the drain marked
    the open connections: its first answer must say "Connection: close" (the
    client moves to another node), not serve on until the drain cuts it
    mid-request. Seen as a request without an answer in a Swarm rolling update."""
    c = tls_collector(collector_factory, tmp_path, workers=1, DrainTimeoutSeconds=20)
    # An idle keep-alive connection holds the drain open for about a second.
    holder = https(c)
    holder.request("GET", "/ping")
    assert holder.getresponse().read() == b"pong"
    raw = socket.create_connection(("127.0.0.1", c.tls_port), timeout=10)   # no ClientHello yet
    time.sleep(0.3)                                   # accepted by the worker
    c.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    while '"msg":"draining"' not in c.logs() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)                                   # the drain has marked its connections
    conn = https(c)
    conn.sock = client_context(c.cafile).wrap_socket(raw, server_hostname="localhost")
    conn.request("GET", "/tr/v1/vid/3d0be300-cbd2-11e8-aa59-ffd128a54d91/ename/late")
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 200 and resp.will_close
    conn.close()
    holder.close()
    assert c.proc.wait(30) == 0
