"""ACME against a real CA (pebble): issuance at start through the plain
port's HTTP-01 answers, HTTPS with the issued certificate, renewal by the
node itself served without a restart, and the cache reused across starts."""
import os
import socket
import stat
import time

import pytest

from cryptography import x509

from conftest import free_port
from pebbleca import needs_pebble, pebble_factory  # noqa: F401 (fixture)
from tlshelpers import https, served_serial, wait_https

pytestmark = needs_pebble


def acme_collector(collector_factory, pebble_factory, tmp_path, validity=None,
                   renew_fraction=None, workers=2, name="c", validation_port=None):
    """A collector with ``Domains: ["localhost"]`` and no TLS key, so the Go
    rules derive ACME, pointed at a fresh pebble."""
    c = collector_factory({"Domains": ["localhost"], "AcmeCacheDirectory": "acme-cache"},
                          workers=workers, start=False, name=name)
    del c.config["TLS"]
    ca = pebble_factory(validation_port or c.port, validity)
    c.tls_port = free_port()
    c.config.update(ProxyPortTLS=f"127.0.0.1:{c.tls_port}", AcmeDirectory=ca.directory_url,
                    AcmeCACert=ca.listener_ca)
    if renew_fraction:
        c.config["AcmeRenewFraction"] = renew_fraction
    c.write_config(c.config)
    c.pebble = ca
    c.cache = os.path.join(c.dir, "acme-cache")
    return c


def start(c, tmp_path):
    c.start(wait=False)
    c.cafile = c.pebble.issuing_root(tmp_path / f"pebble-root-{c.pebble.port}.pem")
    wait_https(c, timeout=60)
    return c


def test_certificate_is_issued_through_the_plain_port_and_served(
        collector_factory, pebble_factory, tmp_path):
    c = start(acme_collector(collector_factory, pebble_factory, tmp_path), tmp_path)
    conn = https(c)                          # verified against pebble's issuing root
    conn.request("GET", "/tr/v1/vid/3d0be300-cbd2-11e8-aa59-ffd128a54d91/ename/acme")
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 200
    cert = x509.load_der_x509_certificate(conn.sock.getpeercert(binary_form=True))
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    # The CA really fetched our answer from the plain port (no always-valid mode).
    assert f"validate w/ HTTP: http://localhost:{c.port}/.well-known/acme-challenge/" \
        in c.pebble.logs()
    assert '"ACME challenge answered"' in c.logs()
    assert stat.S_IMODE(os.stat(c.cache).st_mode) == 0o700
    for name in ("account.key", "certificate.pem"):
        assert stat.S_IMODE(os.stat(os.path.join(c.cache, name)).st_mode) == 0o600
    assert os.listdir(os.path.join(c.cache, "challenges")) == []     # withdrawn
    # The plain port keeps redirecting, and unknown tokens are not answered.
    status, _, body = c.get("/.well-known/acme-challenge/unknown-token")
    assert status == 404
    status, headers, _ = c.get("/ping", headers={"Host": "localhost"})
    assert status == 301 and headers["Location"] == f"https://localhost:{c.tls_port}/ping"
    c.stop()
    assert c.rows("select ename from events") == [{"ename": "acme"}]


def test_renewed_certificate_is_served_without_restart(
        collector_factory, pebble_factory, tmp_path):
    # 2-minute certificates renewed after a tenth of their life (12 s).
    c = start(acme_collector(collector_factory, pebble_factory, tmp_path,
                             validity=120, renew_fraction=0.1), tmp_path)
    pids = c.worker_pids()
    first = served_serial(c, c.cafile)
    keep = https(c)                               # a keep-alive TLS connection
    keep.request("GET", "/ping")
    assert keep.getresponse().read() == b"pong"
    deadline = time.monotonic() + 90
    second = first
    while second == first and time.monotonic() < deadline:
        time.sleep(0.5)
        second = served_serial(c, c.cafile)
        keep.request("GET", "/ping")              # used while the renewal happens
        assert keep.getresponse().read() == b"pong"
    assert second != first, "not renewed:\n" + c.logs()
    assert c.worker_pids() == pids                # no worker restarted

    def loads():                                  # each worker swapped a served certificate
        return {line.split('"pid":')[1].split(",")[0] for line in c.logs().splitlines()
                if '"certificate loaded"' in line and '"replaced":true' in line}
    while len(loads()) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)                           # the other worker looks within 0.5 s
    assert len(loads()) == 2, c.logs()
    keep.close()


def test_restart_reuses_the_cached_account_and_certificate(
        collector_factory, pebble_factory, tmp_path):
    c = start(acme_collector(collector_factory, pebble_factory, tmp_path), tmp_path)
    first = served_serial(c, c.cafile)
    assert c.logs().count('"ACME account registered"') == 1
    assert c.stop() == 0
    start(c, tmp_path)
    assert served_serial(c, c.cafile) == first
    logs = c.logs()
    assert logs.count('"certificate obtained"') == 1          # not issued again
    assert logs.count('"ACME account registered"') == 1       # same account key


def test_refused_validation_is_logged_and_the_node_keeps_running(
        collector_factory, pebble_factory, tmp_path):
    # The CA validates on a port where nothing listens: a real refusal.
    c = acme_collector(collector_factory, pebble_factory, tmp_path,
                       validation_port=free_port())
    c.start(wait=False)
    deadline = time.monotonic() + 60
    while '"certificate not obtained; retrying"' not in c.logs():
        assert time.monotonic() < deadline and c.proc.poll() is None, c.logs()
        time.sleep(0.2)
    failure = [line for line in c.logs().splitlines() if "certificate not obtained" in line][0]
    assert "validation failed: localhost:" in failure and '"seconds":30' in failure
    assert c.get("/ping", headers={"Host": "localhost"})[0] == 301     # plain port serves
    with pytest.raises(ConnectionRefusedError):                       # no TLS without a cert
        socket.create_connection(("127.0.0.1", c.tls_port), timeout=5)
    assert os.listdir(os.path.join(c.cache, "challenges")) == []
    assert c.stop() == 0


def test_unusable_cache_directory_stops_the_start(collector_factory, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    c = collector_factory({"TLS": "acme", "Domains": ["localhost"],
                           "AcmeCacheDirectory": str(blocker / "cache"),
                           "ProxyPortTLS": f"127.0.0.1:{free_port()}"}, start=False)
    c.start(wait=False)
    assert c.proc.wait(15) == 3
    assert f"AcmeCacheDirectory {blocker / 'cache'}: Not a directory" in c.logs()
