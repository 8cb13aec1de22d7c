"""The C++ driver's log lines reach the collector's log (wire_acsylla._driver_log)."""
import io
import json

from engine.logs import log
from engine.store.sinks.cassandra import wire_acsylla


class Message:
    def __init__(self, text, level="WARN"):
        self.message, self.log_level = text, level


def logged(message, monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(log, "stream", out)
    wire_acsylla._driver_log(message)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_driver_line_is_logged_with_its_level(monkeypatch):
    lines = logged(Message("Lost connection to host 127.0.0.3", "ERROR"), monkeypatch)
    assert len(lines) == 1
    assert lines[0]["msg"] == "cassandra driver" and lines[0]["level"] == "warning"
    assert lines[0]["driver_level"] == "ERROR"
    assert lines[0]["message"] == "Lost connection to host 127.0.0.3"


def test_the_scylla_shard_notice_is_dropped(monkeypatch):
    text = ("Could not retrieve sharding info from connection to 127.0.0.1. "
            "Continuing WITHOUT SHARD-AWARENESS.")
    assert logged(Message(text), monkeypatch) == []
