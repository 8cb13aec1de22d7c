"""The command line against a real store filled by a real collector."""

import pytest

from conftest import run_tracker

pytestmark = pytest.mark.integration


def run(*args):
    return run_tracker(*args, timeout=60)


def test_stats_shows_counts_top_urls_and_visitors_today(collector):
    for i in range(3):
        collector.get(f"/tr/v1/url/https%3A%2F%2Fsite%2Fpopular/m/{i}")
    collector.get("/tr/v1/url/https%3A%2F%2Fsite%2Frare")
    assert collector.stop() == 0
    out = run("stats", "--config", collector.config_path)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "https://site/popular" in text and "https://site/rare" in text
    assert text.index("https://site/popular") < text.index("https://site/rare")
    events_line = next(l for l in text.splitlines() if l.strip().startswith("events"))
    assert events_line.split()[-1] == "4"
    visitors_today = next(l for l in text.splitlines() if l.strip().startswith("visitors"))
    assert visitors_today.split()[-1] == "4"     # no vid sent: four new visitors


def test_schema_apply_is_idempotent(tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text('{"Notify": [{"Service": "sqlite", "Path": "s.db"}]}')
    first = run("schema", "apply", "--config", str(cfg))
    assert first.returncode == 0 and "created 14 tables" in first.stdout
    assert "created 11 views (affiliates, aliases" in first.stdout   # DESIGN §3's row tables
    again = run("schema", "apply", "--config", str(cfg))
    assert "created 0 tables" in again.stdout and "14 tables already existed" in again.stdout
    assert "created 0 views" in again.stdout and "11 views already existed" in again.stdout


def test_version_and_check_config(tmp_path):
    assert run("--version").stdout.startswith("tracker ")
    cfg = tmp_path / "config.json"
    cfg.write_text('{"TLS": "off", "ProxyForceJson": true}')
    out = run("check-config", "--config", str(cfg))
    assert out.returncode == 0 and "OK" in out.stdout and "ProxyForceJson" in out.stderr


def test_stats_on_missing_store_is_a_clear_error(tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text('{"Notify": [{"Service": "sqlite", "Path": "nowhere.db"}]}')
    out = run("stats", "--config", str(cfg))
    assert out.returncode == 1 and "nowhere.db" in out.stderr
