"""A config.json shaped like the one the Go collector's repository ships loads
(`tracker check-config` exits 0) and serves (`tracker serve`), with its stores
unreachable and not Critical: the spool carries the gap.

What the Go file has and this collector treats specially: a ``Consume`` entry
``{"Service": "http", "Note": "Not implemented"}`` (skipped, logged as an
error), a Cassandra ``Notify`` entry with a ``Filter`` of CQL queries and
``Retry`` (ignored), ``Filter`` items with ``Type`` (ignored), and top-level
keys this collector does not use (ignored, listed once).
"""
import http.client
import json
import os
import re
import ssl
import subprocess
import time

import pytest

from conftest import TRACKER, free_port, self_signed

pytestmark = pytest.mark.integration

VID = "3d0be300-cbd2-11e8-aa59-ffd128a54d91"


def go_config(cassandra_port, nats_port, upstream_port, tls_port, critical=True):
    """The Go repository's config.json layout, pointed at loopback ports.
    ``critical``: the Go file marks Cassandra and the NATS consumer Critical."""
    tls_files = {"CACert": "./keys/cert.pem", "Cert": "./keys/cert.pem",
                 "Key": "./keys/key.pem"}
    filters = [{"Alias": alias, "Type": "chan", "Id": f"tic.{alias}.>"}
               for alias in ("log", "count", "update")]
    return {
        "Domains": ["dev.example.com"],
        "SchemaVersion": 2,
        "ApiVersion": 1,
        "StaticDirectory": "public",
        "ProxyUrl": f"http://127.0.0.1:{upstream_port}",
        "UseLocalTLS": True,
        "TLSCert": "./keys/cert.pem",
        "TLSKey": "./keys/key.pem",
        "ProxyPortTLS": f"127.0.0.1:{tls_port}",
        "ProxyPortRedirect": "",
        "ProxyPort": ":8080",
        "ProxyDailyLimit": 1000,
        "ProxyDailyLimitChecker": "cassandra",
        "IgnoreProxyOptions": False,
        "ProxyUrlFilter": ".*(dontlogthese|login|css|js|json|jpeg|jpg|gif|png|ico)",
        "ProxyForceJson": False,
        "MaximumConnections": 150000,
        "PrefixPrivateHash": "",
        "ReadTimeoutSeconds": 20,
        "ReadHeaderTimeoutSeconds": 20,
        "WriteTimeoutSeconds": 20,
        "IdleTimeoutSeconds": 20,
        "MaxHeaderBytes": 1048576,
        "AllowOrigin": "*",
        "DefaultRedirect": "https://example.com",
        "Debug": True,
        "UrlPrefixFilter": "https://example.com",
        "IgnoreQueryParamsKey": "igqp",
        "AccountHashMixer": "",
        "Notify": [
            {"Service": "cassandra", "Connections": 2,
             "Hosts": [f"127.0.0.1:{cassandra_port}"], "Context": "sfpla", "Timeout": 300,
             **tls_files, "Secure": False, "Retry": False, "Critical": critical,
             "Filter": [
                 {"Alias": "log", "Id": "log", "Queries": [
                     {"Statement": "INSERT INTO logs JSON ?", "QueryType": "json",
                      "Fields": [{"Type": "string", "Id": "name"},
                                 {"Type": "date", "Id": "ldate"}]}]},
                 {"Alias": "count", "Id": "count", "Queries": [
                     {"Statement": "UPDATE counters set total=total+1 where id=? AND type=?",
                      "Fields": [{"Type": "string", "Id": "id"},
                                 {"Type": "string", "Id": "type"}]}]}]},
            {"Service": "nats", "Hosts": [f"tls://127.0.0.1:{nats_port}"],
             "Context": "toc.track.notify", "Secure": True, **tls_files, "Format": "json"},
        ],
        "Consume": [
            {"Service": "http", "Note": "Not implemented"},
            {"Service": "nats", "Hosts": [f"tls://127.0.0.1:{nats_port}"], "Secure": True,
             "Critical": critical, **tls_files, "Format": "json", "MessageLimit": 65536,
             "ByteLimit": 67108864, "Filter": filters},
        ],
    }


def closed_port():
    """A loopback port nothing listens on (bound, then released)."""
    return free_port()


@pytest.fixture
def go_dir(tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir()
    self_signed(str(keys))
    return tmp_path


def write(directory, config):
    path = directory / "config.json"
    path.write_text(json.dumps(config, indent=2))
    return str(path)


def test_check_config_accepts_the_go_file(go_dir):
    path = write(go_dir, go_config(closed_port(), closed_port(), closed_port(), free_port()))
    out = subprocess.run([TRACKER, "check-config", "--config", path],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "OK (TLS local" in out.stdout
    assert "stores: cassandra, nats, consumers: nats)" in out.stdout
    assert ("warning: Consume[0]: no consumer exists for Service 'http'; known: nats; "
            "entry skipped") in out.stderr
    info = [line for line in out.stderr.splitlines() if line.startswith("info:")]
    assert len(info) == 1
    ignored = info[0].split("ignored: ", 1)[1].split(", ")
    assert sorted(ignored) == sorted([
        "ProxyPortRedirect", "IgnoreProxyOptions", "ProxyUrlFilter", "ProxyForceJson",
        "PrefixPrivateHash", "AllowOrigin", "IgnoreQueryParamsKey",
        "AccountHashMixer", "Notify[0].Filter", "Notify[0].Retry",
        "Consume[1].Filter[].Type"])
    # Nothing in the file is an error, and nothing else is a warning but the
    # missing StaticDirectory and the skipped entry.
    warnings = [line for line in out.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2 and "StaticDirectory" in warnings[0]


def test_a_misspelt_critical_store_stops_check_config(go_dir):
    config = go_config(closed_port(), closed_port(), closed_port(), free_port())
    config["Notify"][0]["Service"] = "cassandar"        # Critical: true, as in the Go file
    out = subprocess.run([TRACKER, "check-config", "--config", write(go_dir, config)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert ("Notify[0]: no sink is installed for Service 'cassandar' (did you mean "
            "'cassandra'?)") in out.stderr and "is Critical" in out.stderr


def https_get(port, cafile, path):
    ctx = ssl.create_default_context(cafile=cafile)
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=ctx)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_https(c, port, cafile, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if c.proc.poll() is not None:
            raise AssertionError(f"collector exited {c.proc.returncode}:\n{c.logs()}")
        try:
            if https_get(port, cafile, "/ping")[0] == 200:
                return
        except (OSError, ssl.SSLError):
            pass
        time.sleep(0.1)
    raise AssertionError("no HTTPS:\n" + c.logs())


def log_records(c):
    return [json.loads(line) for line in c.logs().splitlines() if line.startswith("{")]


def test_serve_runs_the_go_file_with_its_stores_down(collector_factory):
    tls_port = free_port()
    c = collector_factory(workers=1, start=False, name="go")
    keys = os.path.join(c.dir, "keys")
    os.makedirs(keys)
    cafile, _ = self_signed(keys)
    c.config = go_config(closed_port(), closed_port(), closed_port(), tls_port,
                         critical=False)
    c.config["DrainTimeoutSeconds"] = 2     # the stores never come back: do not wait 10 s
    c.write_config(c.config)
    c.start(wait=False)
    wait_https(c, tls_port, cafile)

    status, _ = https_get(tls_port, cafile, f"/tr/v1/vid/{VID}/ename/go-config")
    assert status == 200
    # Proxied: the daily limit reads Cassandra (down: fail-open), the upstream
    # is down too, so the answer is the proxy's 502, not a 429 or a 500.
    assert https_get(tls_port, cafile, "/some/page")[0] == 502

    def lag(sink):              # the event waits for the stores in the spool
        metrics = https_get(tls_port, cafile, "/metrics")[1]
        found = re.search(rb'^tracker_sink_lag_events\{sink="%s"\} ([0-9.e+]+)$' % sink,
                          metrics, re.M)
        return found and float(found.group(1))
    deadline = time.monotonic() + 15
    while not (lag(b"cassandra") and lag(b"nats")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert lag(b"cassandra") >= 1 and lag(b"nats") >= 1

    records = log_records(c)
    skipped = [r for r in records if r.get("msg") == "config entry skipped"]
    assert len(skipped) == 1 and skipped[0]["level"] == "error"
    assert "Consume[0]: no consumer exists for Service 'http'; known: nats" in \
        skipped[0]["detail"]
    down = {r.get("sink") for r in records if r.get("msg", "").startswith("sink unavailable")}
    assert {"cassandra", "nats"} <= down
    assert any(r.get("msg") == "daily limit read failed" for r in records)
    assert c.stop() == 0
    kept = [r for r in log_records(c)
            if r.get("msg") == "undelivered events stay in the spool for the next start"]
    assert kept and {"0-cassandra", "1-nats"} <= set(kept[0]["pending"])
    spool = c.config.get("SpoolDirectory") or "spool"
    left = [n for n in os.listdir(os.path.join(c.dir, spool)) if n.endswith(".spool")]
    assert left and all(os.path.getsize(os.path.join(c.dir, spool, n)) > 16 for n in left)
