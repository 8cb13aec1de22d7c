"""Bus messages (NATS ``log``, ``count``, ``update``) into store-neutral records.

The consumer parses every message here; a message that does not fit raises
``MessageError`` (counted and logged by the consumer, never fatal). The
records are plain dicts with store-neutral types so that every store's
``write_messages(logs, counts, updates)`` (SQLite, Cassandra, ...) receives
the same thing:

log record (table ``logs``)
    id        str   canonical UUID: the message's ``id`` when it is a UUID,
                    else a new time-based UUID (a redelivered message with an
                    id is the same row)
    created   int   ms since the epoch, UTC: the message's ``created`` (ms
                    number or ISO-8601 text), else receipt time
    ltime     int   ns since the epoch: the message's ``ltime``, else
                    ``created`` in ns (receipt time in ns when absent)
    ldate     str   "YYYY-MM-DD", UTC day of ``created``
    name, host, hostname, owner, ip, msg   str or None
    level     int or None
    params    dict str -> str: the message's ``params`` object (or JSON text
              of one) plus every other key it carried (nothing is dropped)

counts (table ``counters``)
    dict  counter id (str) -> n, coalesced: +1 per ``count`` message
    ``{"id": "<name>"}``

update record (table ``updates``)
    id        str   required, non-empty text
    updated   int   ms since the epoch: the message's ``updated``, else receipt time
    msg       str or None
    params    dict str -> str, as for logs
    Several updates of one id in a group are coalesced to the latest
    (by ``updated``); stores keep the latest too, whatever the arrival order.
"""
import datetime
import time
import uuid

import orjson


class MessageError(ValueError):
    """A message that cannot be stored; the reason is in the text."""


LOG_TEXT = ("name", "host", "hostname", "owner", "ip", "msg")


def _object(data):
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise MessageError("not JSON") from None
    if not isinstance(obj, dict):
        raise MessageError(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _text(obj, key):
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    raise MessageError(f"{key}: expected text, got {type(value).__name__}")


def _param_text(value):
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, (int, float)):
        return str(value)
    return orjson.dumps(value).decode()


def _params(obj, columns):
    raw = obj.get("params")
    if isinstance(raw, str) and raw.strip():
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise MessageError("params: text that is not a JSON object") from None
    if raw is None or raw == "":
        raw = {}
    if not isinstance(raw, dict):
        raise MessageError(f"params: expected an object, got {type(raw).__name__}")
    params = {str(k): _param_text(v) for k, v in raw.items()}
    for key, value in obj.items():
        if key not in columns and key != "params":
            params.setdefault(key, _param_text(value))
    return params


def _ms(obj, key, now_ms):
    value = obj.get(key)
    if value is None:
        return now_ms
    if isinstance(value, bool):
        raise MessageError(f"{key}: expected ms since the epoch or ISO-8601 text")
    if isinstance(value, (int, float)):
        if not 0 <= value < 253402300800000:
            raise MessageError(f"{key}: {value!r} is out of range")
        return int(value)
    if isinstance(value, str):
        try:
            dt = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise MessageError(f"{key}: {value[:40]!r} is not ISO-8601") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=datetime.timezone.utc)
        return int(dt.timestamp() * 1000)
    raise MessageError(f"{key}: expected ms since the epoch or ISO-8601 text")


def day_of(ms):
    return time.strftime("%Y-%m-%d", time.gmtime(ms // 1000))


_LOG_COLUMNS = frozenset(LOG_TEXT + ("id", "created", "ltime", "ldate", "level"))
_UPDATE_COLUMNS = frozenset(("id", "updated", "msg"))


def parse_log(data, now_ns=None):
    obj = _object(data)
    now_ns = time.time_ns() if now_ns is None else now_ns
    record = {key: _text(obj, key) for key in LOG_TEXT}
    raw_id = obj.get("id")
    try:
        record["id"] = str(uuid.UUID(raw_id)) if isinstance(raw_id, str) else str(uuid.uuid4())
    except ValueError:
        record["id"] = str(uuid.uuid4())   # a non-UUID id is kept in params below; uuid4: uuid1 state is shared by forked processes
    created = _ms(obj, "created", now_ns // 1_000_000)
    record["created"] = created
    ltime = obj.get("ltime")
    if ltime is None:
        ltime = now_ns if "created" not in obj else created * 1_000_000
    elif isinstance(ltime, bool) or not isinstance(ltime, int):
        raise MessageError("ltime: expected an integer (ns since the epoch)")
    record["ltime"] = ltime
    record["ldate"] = day_of(created)
    level = obj.get("level")
    if level is not None:
        if isinstance(level, str) and level.strip().lstrip("-").isdigit():
            level = int(level)
        if isinstance(level, bool) or not isinstance(level, int):
            raise MessageError("level: expected an integer")
    record["level"] = level
    params = _params(obj, _LOG_COLUMNS)
    if isinstance(raw_id, str) and raw_id and record["id"] != raw_id.lower():
        params.setdefault("id", raw_id)
    record["params"] = params
    return record


def parse_count(data):
    obj = _object(data)
    cid = obj.get("id")
    if not isinstance(cid, str) or not cid.strip():
        raise MessageError("id: expected the counter name as non-empty text")
    return cid


def parse_update(data, now_ms=None):
    obj = _object(data)
    uid = obj.get("id")
    if isinstance(uid, (int, float)) and not isinstance(uid, bool):
        uid = str(uid)
    if not isinstance(uid, str) or not uid.strip():
        raise MessageError("id: expected non-empty text")
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    return {"id": uid, "updated": _ms(obj, "updated", now_ms), "msg": _text(obj, "msg"),
            "params": _params(obj, _UPDATE_COLUMNS)}


class MessageGroup:
    """Messages gathered for one write: logs in arrival order, counts
    coalesced per id, updates coalesced to the latest per id."""

    __slots__ = ("logs", "counts", "updates", "messages", "_records")

    def __init__(self):
        self.logs = []
        self.counts = {}
        self.updates = {}
        self.messages = 0
        self._records = None

    def records(self):
        """``(logs, counts, updates)`` for ``write_messages``: the SAME objects
        on every retry of this group (a store may track a group's progress by
        them), built once the group is complete."""
        if self._records is None:
            self._records = (self.logs, self.counts, list(self.updates.values()))
        return self._records

    def add_log(self, record):
        self.logs.append(record)
        self.messages += 1

    def add_count(self, cid, n=1):
        self.counts[cid] = self.counts.get(cid, 0) + n
        self.messages += 1

    def add_update(self, record):
        old = self.updates.get(record["id"])
        if old is None or record["updated"] >= old["updated"]:
            self.updates[record["id"]] = record
        self.messages += 1

    def __len__(self):
        return self.messages
