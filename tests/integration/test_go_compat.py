"""The Go collector's rules and HTTP correctness (issue 14, items 1-5 and 10),
against a running collector over real sockets, then its SQLite store."""
import pytest

pytestmark = pytest.mark.integration

VID = "3d0be300-cbd2-11e8-aa59-ffd128a54d91"
SID = "3d0be301-cbd2-11e8-aa59-ffd128a54d91"
GO_FILTER = r"http(s|)://(localhost|dev\.sfproductlabs\.com)(:[0-9]*|)(/.*)"


def count(c, table):
    return c.rows(f"SELECT COUNT(*) AS n FROM {table}")[0]["n"]


def test_missing_first_writes_visitor_and_session(collector):
    # An email open: a known visitor and session, no "first" in the request.
    for ename in ("open", "click", "open"):
        assert collector.get(f"/tr/v1/vid/{VID}/sid/{SID}/ename/{ename}")[0] == 200
    assert collector.get(f"/tr/v1/vid/{VID}/sid/{SID}/ename/late/first/false")[0] == 200
    assert collector.stop() == 0
    events = collector.rows("SELECT eid, created, first, ename FROM events ORDER BY created, eid")
    assert [e["first"] for e in events] == [1, 1, 1, 0]
    earliest = min((e["created"], e["eid"]) for e in events if e["first"])
    [visitor] = collector.rows("SELECT vid, created, eid FROM visitors")
    [session] = collector.rows("SELECT vid, sid, created, eid FROM sessions")
    assert visitor == {"vid": VID, "created": earliest[0], "eid": earliest[1]}
    assert session == {"vid": VID, "sid": SID, "created": earliest[0], "eid": earliest[1]}


@pytest.mark.parametrize("path,status", [("/tr/v1/m/h", 200), ("/img/v1/m/h", 200),
                                         ("/rdr/v1/m/h?redirect=https://example.com/x", 302)])
def test_head_answers_like_get_without_body_and_is_not_tracked(collector, path, status):
    cookie = {"Cookie": f"vid={VID}", "Origin": "https://example.com"}
    got, head_headers, body = collector.request("HEAD", path, headers=cookie)
    assert (got, body) == (status, b"")
    get_status, get_headers, get_body = collector.get(path, headers=cookie)
    assert get_status == status
    for name in ("Content-Type", "Content-Length", "Location", "Cache-Control", "Set-Cookie",
                 "Access-Control-Allow-Origin"):
        assert head_headers.get(name) == get_headers.get(name), name
    if path.startswith("/img"):
        assert head_headers["Content-Length"] == str(len(get_body)) != "0"
    # A probe from a new visitor gets no cookie: no visitor was minted.
    assert "Set-Cookie" not in collector.request("HEAD", path)[1]
    assert collector.stop() == 0
    assert count(collector, "events") == 1          # the GET only


def test_over_long_target_is_414_and_stores_nothing(collector_factory):
    c = collector_factory({"MaxHeaderBytes": 4096})
    reply = c.raw(b"GET /tr/v1/" + b"a/" * 3000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 414 URI Too Long\r\n")
    reply = c.raw(b"GET /tr/v1/m/x HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 431 ")
    assert c.get("/ping")[0] == 200
    assert c.stop() == 0
    assert count(c, "events") == 0


def test_http11_without_host_is_400_and_stores_nothing(collector):
    reply = collector.raw(b"GET /tr/v1/m/nohost HTTP/1.1\r\nUser-Agent: t\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400 ") and b"Host" in reply
    reply = collector.raw(b"GET /tr/v1/m/http10 HTTP/1.0\r\n\r\n")   # HTTP/1.0 needs none
    assert reply.startswith(b"HTTP/1.1 200 ")
    assert collector.stop() == 0
    assert [r["params"] for r in collector.rows("SELECT params FROM events")] == [
        '{"m":"http10"}']


def test_repeated_query_key_keeps_the_first_value(collector):
    assert collector.get("/tr/v1/ename/path?ename=a&ename=b&k=1&k=2")[0] == 200
    assert collector.stop() == 0
    [ev] = collector.rows("SELECT ename, params FROM events")
    assert ev == {"ename": "a", "params": '{"k":"1"}'}


def test_go_url_prefix_filter_rewrites_url_and_last(collector_factory):
    c = collector_factory({"UrlPrefixFilter": GO_FILTER})
    body = {"url": "https://localhost:5001/cw.html?x=1", "last": "http://dev.sfproductlabs.com/a",
            "vid": VID}
    assert c.post("/tr/v1/", body)[0] == 200
    assert c.stop() == 0
    assert c.rows("SELECT url, last FROM events") == [{"url": "/cw.html", "last": "/a"}]


def test_bad_url_prefix_filter_is_refused_at_check_config(collector_factory, tmp_path):
    import subprocess
    from conftest import TRACKER
    c = collector_factory({"UrlPrefixFilter": "http(s|://"}, start=False)
    done = subprocess.run([TRACKER, "check-config", "--config", c.config_path],
                          capture_output=True, text=True)
    assert done.returncode != 0
    assert "UrlPrefixFilter: got 'http(s|://', not a valid regular expression" in \
        done.stdout + done.stderr
