"""A real browser as a client (issue 22): headless Chromium sends a gzip
batch with fetch + CompressionStream and a stream of events over the
WebSocket, from a page the collector itself serves; every event is stored
once."""
import pytest

from chromium import Chromium, binary

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(binary() is None, reason="chromium is not installed")]

PAGE = """<!doctype html><html><body><script>
async function gzip(text) {
  const stream = new Blob([text]).stream().pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}
async function runTest() {
  const batch = [];
  for (let i = 0; i < 20; i++) batch.push({ename: "fetch", m: "F" + i, w: 800, h: 600});
  const answer = await fetch("/tr/v1/batch", {method: "POST", credentials: "include",
    headers: {"Content-Type": "application/json", "Content-Encoding": "gzip"},
    body: await gzip(JSON.stringify(batch))});
  const ws = new WebSocket("ws://" + location.host + "/tr/v1/ws");
  await new Promise((ok, bad) => { ws.onopen = ok; ws.onerror = bad; });
  const acks = [];
  const done = new Promise(ok => { ws.onmessage = m => {
    acks.push(JSON.parse(m.data)); if (acks.length === 10) ok(); }; });
  for (let i = 0; i < 10; i++)
    ws.send(JSON.stringify(i % 2 ? {ename: "ws", m: "W" + i}
                                  : [{ename: "ws", m: "W" + i}, {ename: "ws", m: "X" + i}]));
  await done;
  ws.close();
  return {status: answer.status, acks: acks, cookie: document.cookie};
}
</script></body></html>"""


def test_chromium_sends_a_gzip_batch_and_a_websocket_stream(collector_factory, tmp_path):
    static = tmp_path / "static"
    static.mkdir()
    (static / "client.html").write_text(PAGE)
    c = collector_factory({"StaticDirectory": str(static)})
    browser = Chromium()
    try:
        result = browser.run(f"http://127.0.0.1:{c.port}/pub/v1/client.html", "runTest()")
    finally:
        browser.close()
    assert result["status"] == 200
    assert [a.get("ack") for a in result["acks"]] == list(range(1, 11))
    assert sum(a["events"] for a in result["acks"]) == 15
    assert "vid=" in result["cookie"]
    assert c.stop() == 0
    markers = [r["m"] for r in c.rows(
        "SELECT json_extract(params, '$.m') AS m FROM events WHERE ename IN ('fetch', 'ws')")]
    expected = [f"F{i}" for i in range(20)] + [f"W{i}" for i in range(10)] + \
               [f"X{i}" for i in range(0, 10, 2)]
    assert sorted(markers) == sorted(expected)      # each once
    vids = {r["vid"] for r in c.rows("SELECT vid FROM events WHERE ename IN ('fetch', 'ws')")}
    assert len(vids) == 1                           # one browser, one visitor
