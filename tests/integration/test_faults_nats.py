"""Fault injection with a real nats-server in JetStream mode (issue 8): the
server stops for ~20 s under a steady load and a worker is killed with
SIGKILL while it is down; the server restarts on the same port with the same
JetStream store. Afterwards every 2xx event is in the stream exactly once
(retried and replayed batches are de-duplicated by ``Nats-Msg-Id`` = eid
within the stream's 2-minute duplicate window) and in SQLite exactly once.
"""
import asyncio
import glob
import json
import os
import signal
import time

import pytest

from engine.spool import read_position

from faultload import Load
from natsserver import nats_factory, needs_nats, wait_until  # noqa: F401 (fixture)

pytestmark = [pytest.mark.integration, needs_nats]

OUTAGE_SECONDS = 20
STREAM = "EVENTS"


async def _quiet(_exc):
    pass


def stream_messages(client, js):
    try:
        return client.call(js.stream_info(STREAM)).state.messages
    except Exception:
        return -1


def read_stream(client, js, expected):
    """Every message of the stream: [(Nats-Msg-Id, event)], via one ephemeral
    pull consumer (batches of 500)."""
    async def read():
        psub = await js.pull_subscribe("tic.track", stream=STREAM)
        out = []
        try:
            while len(out) < expected:
                try:
                    msgs = await psub.fetch(500, timeout=2)
                except asyncio.TimeoutError:
                    break
                for m in msgs:
                    out.append((m.headers.get("Nats-Msg-Id") if m.headers else None,
                                json.loads(m.data)))
                    await m.ack()
        finally:
            await psub.unsubscribe()
        return out
    return client.call(read(), timeout=120)


def test_nats_outage_and_a_killed_worker_keep_every_event_once(nats_factory,
                                                               collector_factory):
    server = nats_factory(jetstream=True).start()
    store_dir = os.path.join(server.dir, "js")
    c = collector_factory({
        "Notify": [{"Service": "sqlite", "Path": "tracker.db", "Critical": True},
                   {"Service": "nats", "Hosts": [server.host], "Context": "tic.track",
                    "Format": "json", "Timeout": 2000, "JetStream": True, "Stream": STREAM,
                    "Critical": False}],
        "BatchMaxAgeMs": 50, "MaxBodyBytes": 2000, "DrainTimeoutSeconds": 30,
    }, workers=2)
    spool_dir = os.path.join(c.dir, "spool")
    port = server.port
    load = Load(c, threads=3, pause=0.01, prefix="N").start()
    try:
        load.wait_more(200)
        client = nats_factory.client(server.url, error_cb=_quiet)   # reconnects later
        js = client.jetstream()
        wait_until(lambda: stream_messages(client, js) > 50, 20, "events in the stream")

        # ---- nats-server down ---------------------------------------------
        down_at = time.monotonic()
        server.stop()
        wait_until(lambda: '"nats disconnected"' in c.logs(), 20, "the sink noticing")
        load.wait_more(150)                              # 2xx from the spool meanwhile

        # ---- kill -9 a worker whose spool holds unpublished events ---------
        victim = c.worker_pids()[0]

        def victim_behind():
            for path in glob.glob(os.path.join(spool_dir, f"w{victim}-*.spool")):
                if read_position(path, "0-sqlite")[0] > read_position(path, "1-nats")[0] + 20:
                    return path
            return None
        victim_spool = wait_until(victim_behind, 30, "unpublished events in the victim's spool")
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: c.replaced("http", [victim], 2), 20,
                   "a replacement worker")
        # ---- and kill -9 the store process, mid-retry -----------------------
        [store] = c.store_pids()
        os.kill(store, signal.SIGKILL)
        wait_until(lambda: c.replaced("store", [store], 1), 20,
                   "a replacement store process")
        assert os.path.exists(victim_spool)              # kept until nats has it all
        load.wait_more(100)

        # ---- nats-server back: same port, same JetStream store --------------
        remaining = OUTAGE_SECONDS - (time.monotonic() - down_at)
        if remaining > 0:
            time.sleep(remaining)                        # the outage itself
        server.start()
        assert server.port == port and os.path.isdir(store_dir)
        print(f"nats-server down for {time.monotonic() - down_at:.1f} s")
        wait_until(lambda: '"sink recovered"' in c.logs(), 30, "the nats sink recovering")
        load.wait_more(200)
    finally:
        load.stop()

    client = nats_factory.client(server.url)       # (the first one is closed by the fixture)
    js = client.jetstream()
    # Everything acknowledged reaches the stream (the killed worker's spool by
    # the new store process), then the clean stop: nothing is left in any spool.
    wait_until(lambda: stream_messages(client, js) >= len(load.ok), 60,
               "the backlog published", interval=0.2)
    wait_until(lambda: not os.path.exists(victim_spool), 30, "the victim's spool finished")
    assert c.stop() == 0
    logs = c.logs()
    assert "drain timed out" not in logs
    assert "undelivered events stay in the spool" not in logs
    assert [n for n in os.listdir(spool_dir) if n.endswith(".spool")] == []

    rows = c.rows("SELECT eid, params FROM events")
    lite_markers = [json.loads(r["params"])["mk"] for r in rows]
    kept_in_doubt = load.check_stored(lite_markers, "SQLite")

    info = client.call(js.stream_info(STREAM))
    published = read_stream(client, js, info.state.messages)
    assert len(published) == info.state.messages
    assert all(msg_id == ev["eid"] for msg_id, ev in published)
    load.check_stored([ev["params"]["mk"] for _, ev in published], "stream " + STREAM)
    assert sorted(ev["eid"] for _, ev in published) == sorted(r["eid"] for r in rows)
    assert load.answers[400] > 0 and load.answers[413] > 0, load.answers
    assert c.rows("SELECT SUM(total) AS n FROM dailies")[0]["n"] == len(rows)
    print(f"2xx {len(load.ok)}, answers {dict(load.answers)}, in doubt {len(load.unknown)} "
          f"(kept {len(kept_in_doubt)}), stream {info.state.messages} messages")
