"""The benchmark runner's smoke mode, end to end: wrk (keep-alive and
Connection: close) and locust against a real collector, the nginx ceiling when
nginx is installed, and every 2xx/3xx answer found stored exactly once."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.skipif(not shutil.which("wrk"), reason="wrk is not installed (Debian package: wrk)")
@pytest.mark.skipif(importlib.util.find_spec("locust") is None,
                    reason="locust is not installed (pip install '.[test]')")
def test_runner_smoke_mode_stores_every_answer(tmp_path):
    done = subprocess.run([sys.executable, "-m", "loadtest.run", "--smoke", "--out", str(tmp_path),
                           "--locust-seconds", "2"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "OK: every 2xx/3xx answer was stored exactly once" in done.stdout
    with open(tmp_path / "latest.json") as fh:
        report = json.load(fh)
    assert report["ok"] and not report["problems"]
    [w] = report["per_workers"]
    store = w["store"]
    assert store["rows"] == store["collector_answered_2xx3xx"] == store["distinct_markers"] > 0
    assert store["collector_exit_code"] == 0
    check = w["locust_check"]
    assert check["stored"] == check["answered_2xx3xx"] > 0
    assert w["locust"]["failures"] == 0
    modes = {(r["server"], r["mode"]) for r in report["runs"]}
    assert {("collector", "keepalive"), ("collector", "close")} <= modes
    if shutil.which("nginx") or os.path.exists("/usr/sbin/nginx"):
        assert {("nginx", "keepalive"), ("nginx", "close")} <= modes
        assert os.path.getsize(tmp_path / "latest.png") > 1000
    for row in report["headline"]:
        assert row["collector"]["rps"] > 0 and row["collector"]["cpu_s_per_1m_events"] > 0
