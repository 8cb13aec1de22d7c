"""Privacy modes (issue 21) against a running collector, then its store:
IPAnonymize, DoNotTrack and ConsentCookie on every route that records a
visit (/tr GET and batch POST, /img, /rdr, static files, the WebSocket)."""
import asyncio
import json
import os
import re

import aiohttp
import pytest

pytestmark = pytest.mark.integration

VID = "3d0be300-cbd2-11e8-aa59-ffd128a54d91"
UA_A = "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0"
UA_B = "Mozilla/5.0 (Macintosh) Safari/17.0"


def started(collector_factory, env=None, **config):
    c = collector_factory(start=False, env=env)
    www = os.path.join(c.dir, "www")
    os.makedirs(www)
    with open(os.path.join(www, "page.html"), "wb") as fh:
        fh.write(b"<p>hi</p>")
    c.config.update({"StaticDirectory": www, "RedirectHosts": ["example.com"], **config})
    c.write_config(c.config)
    return c.start()


def set_cookie(headers):
    return headers.get("Set-Cookie")


def every_value(c):
    """Every text value in every table of the store (to look for addresses)."""
    values = []
    with c.db() as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for row in db.execute(f'SELECT * FROM "{table}"'):
                values.extend(v for v in tuple(row) if isinstance(v, str))
    return values


def visit_every_route(c, headers):
    assert c.get("/tr/v1/?ename=get", headers)[0] == 200
    assert c.post("/tr/v1/", [{"ename": "b1"}, {"ename": "b2"}], headers)[0] == 200
    assert c.get("/img/v1/?ename=img", headers)[0] == 200
    assert c.get("/rdr/v1/?ename=rdr&redirect=https%3A%2F%2Fexample.com%2Fthere", headers)[0] == 302
    assert c.get("/pub/v1/page.html", headers)[0] == 200


def test_truncate_keeps_no_full_address(collector_factory):
    c = started(collector_factory, IPAnonymize="truncate", TrustedProxies=["127.0.0.1/32"])
    visit_every_route(c, {"User-Agent": UA_A})
    assert c.get("/tr/v1/?ename=v6", {"X-Forwarded-For": "2001:db8:1:2::5"})[0] == 200
    assert c.stop() == 0
    ips = {r["ename"] or "static": r["ip"] for r in c.rows("SELECT ename, ip FROM events")}
    assert ips == {"get": "127.0.0.0", "b1": "127.0.0.0", "b2": "127.0.0.0",
                   "img": "127.0.0.0", "rdr": "127.0.0.0", "static": "127.0.0.0",
                   "v6": "2001:db8:1::"}
    values = every_value(c)
    assert "127.0.0.1" not in values and not any("2001:db8:1:2" in v for v in values)


def test_hash_is_one_keyed_value_per_address_across_workers(collector_factory):
    c = started(collector_factory, IPAnonymize="hash", Debug=True)
    workers = set()
    for i in range(12):                 # fresh connections: both workers answer some
        status, headers, _ = c.get(f"/tr/v1/?ename=h{i}")
        assert status == 200
        workers.add(headers["X-Tracker-Worker"].split("/")[0])
    assert c.stop() == 0
    ips = {r["ip"] for r in c.rows("SELECT ip FROM events")}
    assert len(ips) == 1 and re.fullmatch(r"h:[0-9a-f]{16}", ips.pop())
    assert "127.0.0.1" not in every_value(c)
    assert len(workers) == 2, "one worker answered all; the cross-worker check did not run"


PARSERS = [None, {"TRACKER_PURE_PARSE": "1"}]   # compiled, then the reference parser


@pytest.mark.parametrize("env", PARSERS, ids=["compiled", "pure"])
def test_do_not_track_drop_answers_and_stores_nothing(collector_factory, env):
    c = started(collector_factory, env, DoNotTrack="drop")
    for opt_out in ({"DNT": "1"}, {"Sec-GPC": "1"}):
        status, headers, _ = c.get("/tr/v1/?ename=gone", opt_out)
        assert status == 200 and set_cookie(headers) is None
        assert c.post("/tr/v1/", [{"ename": "gone"}] * 2, opt_out)[0] == 200
        status, headers, _ = c.get("/rdr/v1/?ename=gone&redirect=https%3A%2F%2Fexample.com%2Fthere", opt_out)
        assert status == 302 and headers["Location"] == "https://example.com/there"
        assert c.get("/pub/v1/page.html", opt_out)[0] == 200
    status, _, text = c.post("/tr/v1/", b"{bad", {"DNT": "1"})
    assert status == 400 and b"malformed JSON" in text, "a dropped request is still checked"
    assert c.get("/tr/v1/?ename=kept", {"DNT": "0"})[0] == 200
    assert c.stop() == 0
    assert [r["ename"] for r in c.rows("SELECT ename FROM events")] == ["kept"]


@pytest.mark.parametrize("env", PARSERS, ids=["compiled", "pure"])
def test_do_not_track_anonymize(collector_factory, env):
    c = started(collector_factory, env, DoNotTrack="anonymize")
    opted = {"DNT": "1", "User-Agent": UA_A, "Cookie": f"vid={VID}"}
    status, headers, _ = c.get("/tr/v1/?ename=dnt1", opted)
    assert status == 200 and set_cookie(headers) is None
    assert c.get("/tr/v1/?ename=dnt2", opted)[0] == 200
    status, headers, _ = c.get("/tr/v1/?ename=plain", {"User-Agent": UA_A})
    assert status == 200 and "vid=" in set_cookie(headers)
    assert c.stop() == 0
    rows = {r["ename"]: r for r in c.rows("SELECT ename, vid, ip FROM events")}
    assert rows["dnt1"]["ip"] == rows["dnt2"]["ip"] == "127.0.0.0"
    assert rows["dnt1"]["vid"] == rows["dnt2"]["vid"] != VID     # the cookieless id
    assert rows["plain"]["ip"] == "127.0.0.1"


def test_consent_cookie_gates_the_vid_cookie(collector_factory):
    c = started(collector_factory, ConsentCookie="CookieConsent")
    for ename, ua, cookie in (("a1", UA_A, None), ("a2", UA_A, f"vid={VID}"),
                              ("b1", UA_B, "CookieConsent=no")):
        headers = {"User-Agent": ua, **({"Cookie": cookie} if cookie else {})}
        status, answer, _ = c.get(f"/tr/v1/?ename={ename}", headers)
        assert status == 200 and set_cookie(answer) is None, ename
    status, answer, _ = c.get("/img/v1/?ename=c1", {"User-Agent": UA_A,
                                                    "Cookie": "CookieConsent=yes"})
    assert status == 200 and "vid=" in set_cookie(answer)
    minted = set_cookie(answer).split("vid=")[1].split(";")[0]
    status, answer, _ = c.get("/tr/v1/?ename=c2", {"User-Agent": UA_A,
                                                   "Cookie": f"CookieConsent=true; vid={VID}"})
    assert status == 200 and f"vid={VID}" in set_cookie(answer)
    assert c.stop() == 0
    rows = {r["ename"]: r["vid"] for r in c.rows("SELECT ename, vid FROM events")}
    assert rows["a1"] == rows["a2"], "no consent: one daily id per (site, address, agent)"
    assert rows["a1"] not in (VID, rows["b1"]), "another agent is another visitor"
    assert rows["c1"] == minted and rows["c2"] == VID
    assert all(r["ip"] == "127.0.0.1" for r in c.rows("SELECT ip FROM events"))


async def socket_frames(port, headers, frames):
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"http://127.0.0.1:{port}/tr/v1/ws",
                                      headers=headers) as ws:
            cookie = ws._response.headers.get("Set-Cookie")
            for frame in frames:
                await ws.send_str(json.dumps(frame))
            return [json.loads((await ws.receive(timeout=10)).data) for _ in frames], cookie


def test_websocket_follows_the_modes(collector_factory):
    c = started(collector_factory, ConsentCookie="ok", DoNotTrack="drop", IPAnonymize="hash")
    answers, cookie = asyncio.run(socket_frames(c.port, {"User-Agent": UA_A},
                                                [{"ename": "ws1"}, [{"ename": "ws2"}]]))
    assert answers == [{"ack": 1, "events": 1}, {"ack": 2, "events": 1}] and cookie is None
    answers, cookie = asyncio.run(socket_frames(c.port, {"DNT": "1"}, [{"ename": "gone"}]))
    assert answers == [{"ack": 1, "events": 1}] and cookie is None
    assert c.stop() == 0
    rows = c.rows("SELECT ename, vid, ip FROM events ORDER BY ename")
    assert [r["ename"] for r in rows] == ["ws1", "ws2"]
    assert rows[0]["vid"] == rows[1]["vid"] and rows[0]["ip"].startswith("h:")


def test_dropped_and_hashed_requests_still_meet_the_rate_limit(collector_factory):
    c = started(collector_factory, IPAnonymize="hash", DoNotTrack="drop",
                RateLimit={"Track": {"PerIPRate": 0.1, "PerIPBurst": 3}})
    statuses = [c.get("/tr/v1/?ename=r", {"DNT": "1"})[0] for _ in range(6)]
    assert statuses[:3] == [200] * 3 and 429 in statuses[3:]
    assert c.stop() == 0


FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
ROBOTS = ("curl/8.5.0", "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
          "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "HeadlessChrome/120.0.0.0 Safari/537.36")


@pytest.mark.parametrize("bots", ["keep", "flag", "drop"])
def test_bots(collector_factory, bots):
    c = started(collector_factory, Bots=bots)
    for n, ua in enumerate((FIREFOX,) + ROBOTS):
        assert c.get(f"/tr/v1/?ename=e{n}", {"User-Agent": ua})[0] == 200
    assert c.get("/tr/v1/?ename=sent&os=MyOS", {"User-Agent": FIREFOX})[0] == 200
    assert c.stop() == 0
    rows = {r["ename"]: r for r in c.rows("SELECT ename, os, params FROM events")}
    assert rows["e0"]["os"] == "Linux" and rows["sent"]["os"] == "MyOS"
    assert json.loads(rows["e0"]["params"])["browser_family"] == "Firefox"
    robots = {"e1", "e2", "e3"}
    if bots == "drop":
        assert set(rows) == {"e0", "sent"}
        return
    assert robots <= set(rows)
    flagged = {name for name, r in rows.items()
               if json.loads(r["params"] or "{}").get("bot") == "true"}
    assert flagged == (robots if bots == "flag" else set())
