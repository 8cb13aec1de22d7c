"""Publishing every tracked event to a real nats-server (Notify "nats")."""
import json
import os
import subprocess
import time

import pytest

from conftest import params_of
from natsserver import nats_factory, needs_nats, wait_until  # noqa: F401 (fixture)

pytestmark = [pytest.mark.integration, needs_nats]

VID = "3d0be300-cbd2-11e8-aa59-ffd128a54d91"
SID = "3d0be301-cbd2-11e8-aa59-ffd128a54d91"


def nats_notify(server, **extra):
    entry = {"Service": "nats", "Hosts": [server.host], "Context": "tic.track",
             "Format": "json", "Timeout": 2000}
    entry.update(extra)
    return entry


def sqlite_notify():
    return {"Service": "sqlite", "Path": "tracker.db", "Critical": True}


def send_events(collector, n, tag):
    for i in range(n):
        if i % 2:
            status = collector.get(f"/tr/v1/vid/{VID}/sid/{SID}/ename/{tag}/n/{i}"
                                   f"/lat/37.5/lon/6.25?utm_source=news")[0]
        else:
            status = collector.post("/tr/v1/", {"vid": VID, "ename": tag, "score": 2.5,
                                                "params": {"n": str(i)}, "uid": "andy"})[0]
        assert status == 200


def test_subscriber_sees_every_event_with_its_fields(nats_factory, collector_factory):
    server = nats_factory().start()
    sub = nats_factory.client(server.url)
    received = sub.subscribe("tic.track")
    c = collector_factory({"Notify": [sqlite_notify(), nats_notify(server)]})
    send_events(c, 40, "pub")
    wait_until(lambda: len(received) >= 40, what="40 events on tic.track")
    rows = wait_until(lambda: (lambda r: r if len(r) == 40 else None)(
        c.rows("SELECT * FROM events")), what="40 rows in SQLite")
    published = [json.loads(m.data) for m in received]
    assert all(m.subject == "tic.track" for m in received)
    by_eid = {ev["eid"]: ev for ev in published}
    assert len(by_eid) == 40 == len(published)          # every event once
    assert set(by_eid) == {r["eid"] for r in rows}       # the same events as the store
    for row in rows:
        ev = by_eid[row["eid"]]
        assert ev["vid"] == VID == row["vid"]
        assert ev["sid"] == row["sid"]
        assert ev["ename"] == "pub"
        assert ev["ip"] == "127.0.0.1"
        assert ev["params"] == params_of(row)
        assert isinstance(ev["created"], int) and ev["created"] > 1_600_000_000_000
        if "lat/37.5" in (row.get("url") or "") or ev.get("latlon"):
            assert ev["latlon"] == [37.5, 6.25]
            assert ev["source"] == "news"
            assert ev["sid"] == SID
        else:
            assert ev["score"] == 2.5 and ev["uid"] == "andy"
    assert sum(1 for ev in published if ev.get("latlon")) == 20
    # workers publish their counters twice a second
    wait_until(lambda: 'tracker_sink_events_written_total{sink="nats"} 40.0'
               in c.get("/metrics")[2].decode(), what="nats written metric = 40")


def test_jetstream_mode_stream_acks_every_event_once(nats_factory, collector_factory):
    server = nats_factory(jetstream=True).start()
    c = collector_factory({"Notify": [sqlite_notify(),
                                      nats_notify(server, JetStream=True, Stream="EVENTS")]})
    send_events(c, 30, "js")
    client = nats_factory.client(server.url)
    js = client.jetstream()
    wait_until(lambda: client.call(js.stream_info("EVENTS")).state.messages >= 30,
               what="30 messages in stream EVENTS")
    info = client.call(js.stream_info("EVENTS"))
    assert info.config.subjects == ["tic.track"]
    assert info.state.messages == 30
    # The SQLite channel writes independently of the NATS one: wait for it too.
    wait_until(lambda: len(c.rows("SELECT eid FROM events")) >= 30, what="30 rows in SQLite")
    stored = {r["eid"] for r in c.rows("SELECT eid FROM events")}
    seen = set()
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = client.call(js.get_msg("EVENTS", seq))
        ev = json.loads(msg.data)
        assert msg.headers["Nats-Msg-Id"] == ev["eid"]   # the stream de-duplicates retries
        seen.add(ev["eid"])
    assert seen == stored and len(seen) == 30


def test_nats_down_at_start_events_wait_then_arrive(nats_factory, collector_factory):
    server = nats_factory(jetstream=True)          # configured, not running yet
    c = collector_factory({"Notify": [sqlite_notify(), nats_notify(
        server, Timeout=300, JetStream=True, Stream="EVENTS")]})
    send_events(c, 10, "late")
    assert c.get("/ready")[0] == 200     # not Critical: the node keeps serving
    assert "sink unavailable at start; events wait for it" in c.logs()
    server.start()
    # the batches were kept; the batcher's retry (backoff up to 5 s) starts the
    # sink, which creates the stream, so every kept event is in it (no race
    # with a subscriber that connects late)
    client = nats_factory.client(server.url)
    js = client.jetstream()

    def stored():
        try:
            return client.call(js.stream_info("EVENTS")).state.messages
        except Exception:
            return 0
    wait_until(lambda: stored() >= 10, timeout=20, what="the 10 kept events in EVENTS")
    assert stored() == 10
    eids = {json.loads(client.call(js.get_msg("EVENTS", seq)).data)["eid"]
            for seq in range(1, 11)}
    assert eids == {r["eid"] for r in c.rows("SELECT eid FROM events")}


def test_critical_nats_down_refuses_to_start(nats_factory, collector_factory):
    server = nats_factory()          # never started
    c = collector_factory({"Notify": [sqlite_notify(), nats_notify(server, Critical=True,
                                                                   Timeout=300)]},
                          start=False)
    c.start(wait=False)
    code = c.proc.wait(30)
    assert code == 3, c.logs()
    assert "critical sink nats unavailable" in c.logs()


def make_certs(directory):
    """A CA, a server certificate for 127.0.0.1, a client certificate."""
    def run(*args):
        subprocess.run(["openssl", *args], cwd=directory, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", "ca.key",
        "-out", "ca.pem", "-subj", "/CN=tracker test CA")
    ext = os.path.join(directory, "san.ext")
    with open(ext, "w") as fh:
        fh.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
            f"{name}.csr", "-subj", f"/CN={name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile", ext)
    return {k: os.path.join(directory, v) for k, v in
            {"ca": "ca.pem", "cert": "server.pem", "key": "server.key",
             "client_cert": "client.pem", "client_key": "client.key"}.items()}


def test_tls_with_verified_server_and_client_certificate(nats_factory, collector_factory,
                                                        tmp_path):
    import ssl
    certs = make_certs(str(tmp_path))
    server = nats_factory(tls={"cert": certs["cert"], "key": certs["key"], "ca": certs["ca"],
                               "verify": True}).start()
    ctx = ssl.create_default_context(cafile=certs["ca"])
    ctx.load_cert_chain(certs["client_cert"], certs["client_key"])
    sub = nats_factory.client(server.url, tls=ctx)
    received = sub.subscribe("tic.track")
    c = collector_factory({"Notify": [sqlite_notify(), nats_notify(
        server, Hosts=[f"tls://127.0.0.1:{server.port}"], CACert=certs["ca"],
        Cert=certs["client_cert"], Key=certs["client_key"], Secure=True, Critical=True)]})
    send_events(c, 6, "tls")
    wait_until(lambda: len(received) >= 6, what="6 events over TLS")
    assert {json.loads(m.data)["ename"] for m in received} == {"tls"}


def test_tls_refuses_an_unverifiable_server(nats_factory, collector_factory, tmp_path):
    certs = make_certs(str(tmp_path))
    server = nats_factory(tls={"cert": certs["cert"], "key": certs["key"], "ca": certs["ca"],
                               "verify": False}).start()
    # Secure without the right CA: the system CAs do not know the test CA.
    c = collector_factory({"Notify": [sqlite_notify(), nats_notify(
        server, Hosts=[f"tls://127.0.0.1:{server.port}"], Secure=True, Critical=True,
        Timeout=500)]}, start=False)
    c.start(wait=False)
    assert c.proc.wait(30) == 3
    assert "CERTIFICATE_VERIFY_FAILED" in c.logs() or "certificate verify" in c.logs()
