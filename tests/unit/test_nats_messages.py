"""NATS config validation, message parsing and SQLite write_messages (real files)."""
import asyncio
import json
import sqlite3

import pytest

from engine.config import config_from_dict
from engine.errors import ConfigError
from engine.nats.messages import (MessageError, MessageGroup, parse_count, parse_log,
                             parse_update)
from engine.store.sinks.sqlite import SQLiteSink


def test_nats_entries_are_validated_with_key_and_value():
    with pytest.raises(ConfigError) as err:
        config_from_dict({"Notify": [{"Service": "nats", "Hosts": [], "Context": "a.*",
                                      "Format": "xml", "Replicas": 9}]})
    text = str(err.value)
    for part in ("Notify[0].Hosts", "Notify[0].Context: got 'a.*'", "Notify[0].Format",
                 "Notify[0].Replicas: got 9"):
        assert part in text
    cfg = config_from_dict({"Notify": [{"Service": "nats", "Hosts": ["127.0.0.1:4222"],
                                        "Context": "tic.track", "JetStream": True}],
                            "Consume": [{"Service": "nats", "Hosts": ["h:1"]}]})
    assert cfg.notify[0]["JetStream"] is True


def test_log_message_fields_and_params():
    rec = parse_log(b'{"name": "api", "level": 4, "created": "2025-11-27T23:15:26.5Z",'
                    b' "id": "not-a-uuid", "params": "{\\"a\\": 1}", "zone": "eu"}',
                    now_ns=5)
    assert rec["created"] == 1764285326500 and rec["ldate"] == "2025-11-27"
    assert rec["ltime"] == 1764285326500 * 1_000_000
    assert rec["level"] == 4 and rec["name"] == "api"
    assert rec["params"] == {"a": "1", "zone": "eu", "id": "not-a-uuid"}
    assert len(rec["id"]) == 36 and rec["id"] != "not-a-uuid"


@pytest.mark.parametrize("data", [b"", b"nope", b"[]", b'{"level": 1.5}',
                                  b'{"ltime": "x"}', b'{"params": 3}',
                                  b'{"created": -1}', b'{"host": {"a": 1}}'])
def test_malformed_logs_raise(data):
    with pytest.raises(MessageError):
        parse_log(data)


def test_count_and_update_parsing_and_coalescing():
    assert parse_count(b'{"id": "signups"}') == "signups"
    for bad in (b'{"id": 3}', b'{}', b'"x"'):
        with pytest.raises(MessageError):
            parse_count(bad)
    g = MessageGroup()
    for _ in range(3):
        g.add_count("a")
    g.add_update(parse_update(b'{"id": "u", "msg": "new", "updated": 20}'))
    g.add_update(parse_update(b'{"id": "u", "msg": "old", "updated": 10}'))
    assert g.counts == {"a": 3} and len(g) == 5
    logs, counts, updates = g.records()
    assert [u["msg"] for u in updates] == ["new"]
    assert g.records()[2] is updates          # the same objects on every retry


def test_sqlite_write_messages_one_transaction_latest_update_wins(tmp_path):
    path = str(tmp_path / "t.db")
    cfg = config_from_dict({"Notify": [{"Service": "sqlite", "Path": path}]})
    sink = SQLiteSink(cfg.notify[0], cfg)

    async def go():
        await sink.start()
        log = parse_log(b'{"id": "6f1c3a52-0000-4000-8000-000000000001", "msg": "m",'
                        b' "created": 1000}')
        assert await sink.write_messages([log], {"c": 2}, [
            parse_update(b'{"id": "u", "msg": "new", "updated": 20}')]) == 4
        # older update loses, log redelivery is the same row, counters add up
        await sink.write_messages([log], {"c": 3}, [
            parse_update(b'{"id": "u", "msg": "old", "updated": 10}')])
        # a failing group is rolled back whole: nothing of it is counted
        # (the update fails after the counter was added in the same transaction)
        bad = {"id": None, "updated": 5, "msg": None, "params": {}}
        with pytest.raises(sqlite3.IntegrityError):
            await sink.write_messages([], {"c": 100}, [bad])
        await sink.close()
    asyncio.run(go())
    db = sqlite3.connect(path)
    assert db.execute("SELECT total FROM counters WHERE id = 'c'").fetchone() == (5,)
    assert db.execute("SELECT msg, updated FROM updates").fetchall() == [
        ("new", "1970-01-01T00:00:00.020Z")]
    assert db.execute("SELECT count(*), min(created) FROM logs").fetchone() == (
        1, "1970-01-01T00:00:01.000Z")
    assert json.loads(db.execute("SELECT params FROM logs").fetchone()[0]) == {}
