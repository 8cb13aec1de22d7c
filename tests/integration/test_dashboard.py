"""/dash/ on a real collector: off without DashboardToken, 401 without the
token, never cached, no script; its figures equal `tracker report`'s (read
from the HTML over a socket, and from the page real headless Chromium
renders); a screenshot of it (docs/dashboard.png is one, taken with
TRACKER_DASHBOARD_SCREENSHOT=docs/dashboard.png)."""
import asyncio
import base64
import http.client
import json
import os
import shutil
import subprocess
from html.parser import HTMLParser

import aiohttp
import pytest

from conftest import TRACKER, free_port, wait_for
from engine.reports.render import format_cell
from report_corpus import stored_experiment

TOKEN = "s3cret-dashboard-token"
STEPS = "view,signup,buy"


@pytest.fixture(scope="module")
def dash_collector(tmp_path_factory):
    admin = free_port()
    c, truth = stored_experiment(tmp_path_factory.mktemp("dash"), {
        "AdminListen": f"127.0.0.1:{admin}", "DashboardToken": TOKEN})
    c.admin_port = admin
    yield c
    c.stop()


def get(port, path, headers=None, method="GET"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def bearer(token=TOKEN):
    return {"Authorization": f"Bearer {token}"}


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def cli(c, kind, *args):
    out = subprocess.run([TRACKER, "report", kind, "--json", "--config", c.config_path, *args],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def cli_figures(c):
    """data-k -> text, from the CLI's JSON, as the dashboard must show them."""
    want = {}
    for row in cli(c, "experiments"):
        for column, value in row.items():
            want[f"experiments.{row['xid']}.{row['split']}.{column}"] = format_cell(column, value)
    for kind, key, args in (("loops", "ref", ()), ("funnels", "step", ("--steps", STEPS)),
                            ("traffic", "day", ())):
        found = cli(c, kind, *args)
        for name in ("k", "median_cycle_seconds", "referred_visitors", "their_referrals",
                     "events", "new_visitors"):
            if name in found["summary"]:
                want[f"{kind}.summary.{name}"] = format_cell(name, found["summary"][name])
        for row in found["rows"][:10]:
            for column, value in row.items():
                want[f"{kind}.{row[key]}.{column}"] = format_cell(column, value)
    for row in cli(c, "pages")[:10]:
        want[f"pages.{row['url']}.events"] = format_cell("events", row["events"])
    return want


class Figures(HTMLParser):
    """data-k -> the element's text."""

    def __init__(self):
        super().__init__()
        self.found, self.open, self.tags = {}, None, []

    def handle_starttag(self, tag, attrs):
        key = dict(attrs).get("data-k")
        self.tags.append(tag)
        if key is not None:
            self.open, self.found[key] = key, ""

    def handle_endtag(self, tag):
        self.open = None

    def handle_data(self, data):
        if self.open is not None:
            self.found[self.open] += data


def figures_of(html):
    parser = Figures()
    parser.feed(html)
    return parser.found, parser.tags


def test_refused_without_the_token_and_never_cached(dash_collector):
    port = dash_collector.admin_port
    for headers in ({}, bearer("wrong"), basic("admin", "wrong"), {"Authorization": "Basic %%%"},
                    {"Authorization": TOKEN}):
        status, hdrs, body = get(port, "/dash/", headers)
        assert status == 401, headers
        assert hdrs["www-authenticate"].startswith("Basic ")
        assert "no-store" in hdrs["cache-control"]
        assert TOKEN.encode() not in body
    status, hdrs, _ = get(port, "/dash")
    assert status == 301 and hdrs["location"] == "/dash/"
    status, _, _ = get(dash_collector.port, "/dash/", bearer())
    assert status == 404                    # with AdminListen: only on the admin port


def test_page_with_bearer_or_basic_auth(dash_collector):
    port = dash_collector.admin_port
    status, hdrs, body = get(port, "/dash/", bearer())
    assert status == 200, body[:300]
    assert hdrs["content-type"].startswith("text/html")
    assert "no-store" in hdrs["cache-control"]
    assert "default-src 'none'" in hdrs["content-security-policy"]
    html = body.decode()
    _, tags = figures_of(html)
    assert "script" not in tags and "link" not in tags and "img" not in tags
    assert tags.count("svg") >= 3           # traffic, and each experiment's rates
    assert "src=" not in html and "http://" not in html.split("<body>")[0]
    status, _, again = get(port, "/dash/", basic("anyone", TOKEN))
    assert status == 200 and b"<svg" in again
    status, hdrs, head = get(port, "/dash/", bearer(), method="HEAD")
    assert status == 200 and head == b"" and int(hdrs["content-length"]) > 1000
    status, _, body = get(port, "/dash/?since=yesterday", bearer())
    assert status == 400 and b"--since" in body


def test_figures_equal_the_cli(dash_collector):
    status, _, body = get(dash_collector.admin_port, f"/dash/?steps={STEPS}", bearer())
    assert status == 200
    shown, _ = figures_of(body.decode())
    want = cli_figures(dash_collector)
    assert len(want) > 60
    missing = {k: v for k, v in want.items() if shown.get(k) != v}
    assert not missing, {k: (v, shown.get(k)) for k, v in list(missing.items())[:10]}
    assert shown["experiments.x1.A.visitors"] != "" and shown["loops.summary.k"] != ""


def test_public_port_serves_it_without_admin_listen_and_nothing_without_a_token(
        collector_factory):
    c = collector_factory({"DashboardToken": TOKEN}, workers=1, name="public")
    status, hdrs, body = get(c.port, "/dash/", bearer())
    assert status == 200 and b"no exposures in this range" in body
    assert get(c.port, "/dash/")[0] == 401
    off = collector_factory(workers=1, name="off")
    assert get(off.port, "/dash/", bearer())[0] == 404


def _visitors_shown(port):
    status, _, body = get(port, "/dash/", bearer())
    assert status == 200
    shown, _ = figures_of(body.decode())
    day = next(k for k in shown if k.startswith("traffic.") and k.endswith(".visitors")
               and "summary" not in k)
    return shown[day], body


def _track_new_visitor(c):
    conn = c.connection()
    conn.request("GET", "/tr/v1/ename/view/url/https:~~shop.example~")
    assert conn.getresponse().status == 200
    conn.close()


def test_a_built_page_is_served_again_for_dashboard_cache_seconds(collector_factory):
    cached = collector_factory({"DashboardToken": TOKEN, "DashboardCacheSeconds": 600},
                               workers=1, name="cached")
    fresh = collector_factory({"DashboardToken": TOKEN, "DashboardCacheSeconds": 0},
                              workers=1, name="fresh")
    for c in (cached, fresh):
        _track_new_visitor(c)
        assert wait_for(lambda: c.rows("SELECT count(*) AS n FROM ev")[0]["n"] == 1)
    first_cached, page = _visitors_shown(cached.port)
    first_fresh, _ = _visitors_shown(fresh.port)
    assert first_cached == first_fresh == "1"
    for c in (cached, fresh):
        _track_new_visitor(c)
        assert wait_for(lambda: c.rows("SELECT count(*) AS n FROM ev")[0]["n"] == 2)
    again, same_page = _visitors_shown(cached.port)
    assert (again, same_page) == ("1", page)              # the same page, not rebuilt
    assert _visitors_shown(fresh.port)[0] == "2"           # 0: every request rebuilds
    status, _, other = get(cached.port, "/dash/?since=2000-01-01", bearer())
    assert status == 200 and figures_of(other.decode())[0] != figures_of(page.decode())[0]


# ---------------------------------------------------------------- a real browser

chromium_missing = pytest.mark.skipif(
    not (shutil.which("chromium") or shutil.which("chromium-browser")),
    reason="Debian's chromium is not installed (scripts/test installs it)")

READ_FIGURES = ("JSON.stringify(Object.fromEntries(Array.from("
                "document.querySelectorAll('[data-k]'), e => [e.dataset.k, e.textContent])))")


async def _browse(devtools_port, url, headers, expression, shot_path):
    from chromium import _Session
    async with aiohttp.ClientSession() as http_session:
        async with http_session.get(f"http://127.0.0.1:{devtools_port}/json") as r:
            page = next(t for t in await r.json() if t["type"] == "page")
        async with http_session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            session = _Session(ws)
            await session.call("Page.enable")
            await session.call("Network.enable")
            await session.call("Network.setExtraHTTPHeaders", {"headers": headers})
            await session.call("Emulation.setDeviceMetricsOverride", {
                "width": 1280, "height": 1500, "deviceScaleFactor": 1, "mobile": False})
            await session.call("Page.navigate", {"url": url})
            await session.wait_event("Page.loadEventFired", 60)
            result = await session.call("Runtime.evaluate", {
                "expression": expression, "returnByValue": True}, 60)
            shot = await session.call("Page.captureScreenshot", {"format": "png"}, 60)
    with open(shot_path, "wb") as fh:
        fh.write(base64.b64decode(shot["data"]))
    return result["result"]["value"]


@chromium_missing
def test_chromium_renders_the_cli_figures(dash_collector, tmp_path):
    from chromium import Chromium
    browser = Chromium()
    shot = tmp_path / "dashboard.png"
    try:
        shown = json.loads(asyncio.run(_browse(
            browser.port, f"http://127.0.0.1:{dash_collector.admin_port}/dash/?steps={STEPS}",
            bearer(), READ_FIGURES, str(shot))))
    finally:
        browser.close()
    want = cli_figures(dash_collector)
    missing = {k: (v, shown.get(k)) for k, v in want.items() if shown.get(k) != v}
    assert not missing, list(missing.items())[:10]
    png = shot.read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000
    keep = os.environ.get("TRACKER_DASHBOARD_SCREENSHOT")
    if keep:
        shutil.copyfile(shot, keep)
