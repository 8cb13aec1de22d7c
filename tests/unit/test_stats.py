"""engine.store.stats on a real SQLite file filled by the SQLite sink."""
import datetime
import sqlite3
import time
import uuid

import pytest

from engine.store import stats
from engine.store.sinks.sqlite import SQLiteSink

T = 1764285326123  # 2025-11-27T23:15:26.123Z
DAY = datetime.date(2025, 11, 27)
HOUR = 3_600_000


class Cfg:
    schema_version = 1


def ev(vid, created, **kw):
    e = {"eid": str(uuid.uuid1()), "vid": vid, "sid": vid, "created": created,
         "first": False, "ip": "127.0.0.1", "params": {}}
    e.update(kw)
    return e


@pytest.fixture
def filled(tmp_path):
    path = str(tmp_path / "tracker.db")
    sink = SQLiteSink({"Service": "sqlite", "Path": path}, Cfg())
    sink.start_sync()
    a, b, c = (str(uuid.uuid4()) for _ in range(3))
    batch = [
        ev(a, T, first=True, new_visitor=True, url="https://s/home", last="https://google.com/"),
        ev(a, T + 1, url="https://s/home", last="https://s/home"),
        ev(a, T + 2, url="https://s/pricing", last="https://s/home"),
        ev(b, T + 3, first=True, url="https://s/home", last="https://google.com/"),
        # the day before DAY: counted in totals, not "today"
        ev(c, T - 24 * HOUR, first=True, new_visitor=True, url="https://s/blog"),
    ]
    batch += [ev(b, T + 10 + i, url=f"https://s/p{i:02d}") for i in range(12)]
    sink.write_batch_sync(batch)
    sink.close_sync()
    return path


def test_collect_on_a_filled_db(filled):
    s = stats.collect(filled, today=DAY)
    assert s["today"] == "2025-11-27"
    assert s["schema_version"] == 1
    assert s["size_bytes"] > 0
    assert s["tables"]["events"] == 17
    assert s["tables"]["visitors"] == 3
    assert s["tables"]["sessions"] == 3
    assert s["tables"]["hits"] == 3 + 12
    assert s["tables"]["logs"] == 0
    assert s["tables"]["sequences"] == 1
    assert set(s["tables"]) == set(stats.TABLES) and len(stats.TABLES) == 21
    assert s["visitors_today"] == 2
    assert s["events_today"] == 16
    assert len(s["top_urls"]) == 10
    assert s["top_urls"][:2] == [("https://s/home", 3), ("https://s/blog", 1)]
    assert s["top_referrers"] == [("https://google.com/", 2), ("https://s/home", 2)]
    assert s["counters"] == [("vids_created", 2)]

    # the day before
    s = stats.collect(filled, today=DAY - datetime.timedelta(days=1))
    assert (s["visitors_today"], s["events_today"]) == (1, 1)


def test_format_text_is_a_readable_report(filled):
    text = stats.format_text(stats.collect(filled, today=DAY))
    lines = text.splitlines()
    assert lines[0].startswith("Tracker store: ") and lines[0].endswith("tracker.db")
    assert "schema version 1" in text
    assert "Today (2025-11-27 UTC)" in text
    assert any(line.split() == ["visitors", "2"] for line in lines)
    assert any(line.split() == ["events", "16"] for line in lines)
    assert any(line.split() == ["events", "17"] for line in lines)  # rows per table
    assert any(line.split() == ["3", "https://s/home"] for line in lines)
    assert any(line.split() == ["vids_created", "2"] for line in lines)
    for table in stats.TABLES:
        assert any(line.split()[:1] == [table] for line in lines), table


def test_today_defaults_to_the_current_utc_day(tmp_path):
    path = str(tmp_path / "now.db")
    sink = SQLiteSink({"Service": "sqlite", "Path": path}, Cfg())
    sink.start_sync()
    now = int(time.time() * 1000)
    sink.write_batch_sync([ev(str(uuid.uuid4()), now, first=True, url="https://s/")])
    sink.close_sync()
    s = stats.collect(path)
    assert s["today"] == datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    assert (s["visitors_today"], s["events_today"]) == (1, 1)


def test_collect_changes_nothing(filled):
    with open(filled, "rb") as f:
        before = f.read()
    stats.collect(filled, today=DAY)
    with open(filled, "rb") as f:
        assert f.read() == before


def test_missing_file_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope" / "tracker.db"
    with pytest.raises(FileNotFoundError) as info:
        stats.collect(missing)
    assert "SQLite database not found" in str(info.value)
    assert str(missing) in str(info.value)
    assert not missing.parent.exists()  # nothing was created


def test_database_without_tables_reports_missing(tmp_path):
    path = tmp_path / "empty.db"
    sqlite3.connect(path).close()
    s = stats.collect(path, today=DAY)
    assert s["tables"]["events"] is None and s["schema_version"] is None
    assert s["top_urls"] == [] and s["counters"] == []
    text = stats.format_text(s)
    assert "missing" in text and "(none)" in text and "unknown" in text
