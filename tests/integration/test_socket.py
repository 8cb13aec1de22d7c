"""/tr/v1/ws (issue 22): events streamed over a WebSocket, acknowledged once
in the spool, against a running collector and its store."""
import asyncio
import json

import aiohttp
import lz4.frame
import pytest

pytestmark = pytest.mark.integration

VID = "3d0be300-cbd2-11e8-aa59-ffd128a54d91"


async def converse(port, frames, cookie=None):
    """Send ``frames`` (str: text, bytes: binary), then read one answer per frame."""
    headers = {"Cookie": f"vid={cookie}"} if cookie else {}
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"http://127.0.0.1:{port}/tr/v1/ws",
                                      headers=headers) as ws:
            set_cookie = ws._response.headers.get("Set-Cookie")
            for frame in frames:
                if isinstance(frame, str):
                    await ws.send_str(frame)
                else:
                    await ws.send_bytes(frame)
            answers = [json.loads((await ws.receive(timeout=10)).data) for _ in frames]
            return answers, set_cookie


def test_frames_are_acknowledged_once_stored(collector):
    frames = [json.dumps({"ename": "one", "vid": VID}),
              json.dumps([{"ename": "two"}, {"ename": "three"}]),
              lz4.frame.compress(json.dumps([{"ename": "four"}] * 3).encode()),
              "{bad", json.dumps([{"ename": "x"}, 5]),
              json.dumps({"ename": "five"})]
    answers, set_cookie = asyncio.run(converse(collector.port, frames, cookie=VID))
    assert answers[0] == {"ack": 1, "events": 1}
    assert answers[1] == {"ack": 2, "events": 2}
    assert answers[2] == {"ack": 3, "events": 3}
    assert answers[3]["frame"] == 4 and answers[3]["error"].startswith("malformed JSON")
    assert answers[4] == {"frame": 5, "error": "element 1: JSON body must be an object"}
    assert answers[5] == {"ack": 6, "events": 1}
    assert set_cookie is None                          # the client had its cookie
    assert collector.stop() == 0
    rows = collector.rows("SELECT vid, ename FROM events ORDER BY ename")
    assert sorted(r["ename"] for r in rows) == ["five", "four", "four", "four", "one",
                                                "three", "two"]
    assert {r["vid"] for r in rows} == {VID}


def test_a_new_visitor_gets_a_vid_in_the_handshake(collector):
    answers, set_cookie = asyncio.run(converse(collector.port, [json.dumps({"ename": "a"}),
                                                                json.dumps({"ename": "b"})]))
    assert [a["ack"] for a in answers] == [1, 2]
    vid = set_cookie.split("vid=")[1].split(";")[0]
    assert collector.stop() == 0
    assert {r["vid"] for r in collector.rows("SELECT vid FROM events")} == {vid}


def test_rate_limit_counts_events(collector_factory):
    c = collector_factory({"RateLimit": {"Track": {"PerIPRate": 0.01, "PerIPBurst": 5}}})
    frames = [json.dumps([{"n": i} for i in range(4)]), json.dumps([{"n": 9}] * 4)]
    answers, _ = asyncio.run(converse(c.port, frames))
    assert answers[0] == {"ack": 1, "events": 4}
    assert answers[1]["frame"] == 2 and answers[1]["error"] == "rate limited"
    assert c.stop() == 0
    assert len(c.rows("SELECT eid FROM events")) == 4


def test_plain_get_on_the_socket_route_is_426(collector):
    status, headers, _ = collector.get("/tr/v1/ws")
    assert status == 426 and headers["Upgrade"] == "websocket"
