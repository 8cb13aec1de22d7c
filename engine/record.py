"""The event record: how an accepted event is written to the spool, and read back.

The HTTP worker parses a tracked request straight into this record (compiled:
``engine/_parse.pyx``); the store stage reads records back as event dicts
(``decode``) and fans them out to the stores. This module is the readable
statement of the format and its pure-Python implementation; the compiled
encoder must produce the very same bytes (tests/unit/test_record.py).

Layout (little-endian)::

    u8   kind        2 (KIND_EVENT)
    u8   flags       F_FIRST | F_NEW_VISITOR | F_LATLON | F_VP | F_DURATION | F_SCORE
    i64  created     server time of acceptance, ms since the epoch (UTC)
    16 B eid         UUID bytes (RFC 4122 order)
    16 B vid
    16 B sid
    f64 lat, f64 lon      when F_LATLON
    i64 w, i64 h          when F_VP
    i64 duration          when F_DURATION
    f64 score             when F_SCORE
    fields, to the end of the record, each one of
      u8 tag (1..TAGS), varint n, n bytes of UTF-8     a text column (TEXT_TAGS)
      u8 PARAM (0x80), varint n, key, varint m, value  one params pair

Text columns come in tag order, each at most once; params pairs follow in the
event's params order. ``varint`` is unsigned LEB128. Strings are UTF-8 with
``surrogatepass`` (no request produces a lone surrogate: headers are decoded
with ``replace`` and JSON refuses them; the round trip stays exact anyway).

Derived columns are not stored: ``bhash`` (FNV-1a 32 of ``browser``, base 36)
and ``country`` (from ``tz``) are computed by ``decode``; ``culture`` is
stored (the first Accept-Language tag, already cut by the parser).

Why binary and not the event's JSON: ids are 16 bytes instead of 38
characters each, numbers need no formatting, and the parser writes the record
in one pass from the request's bytes without building a dict per request.
"""
import struct
import uuid as _uuid

from engine.zones import ZONES

KIND_EVENT = 2

F_FIRST, F_NEW_VISITOR, F_LATLON, F_VP, F_DURATION, F_SCORE = 1, 2, 4, 8, 16, 32

# Text columns in tag order (tag = index + 1). The order is the decoded
# event's key order for them, and the order they are written in.
TEXT_TAGS = ("ip", "uid", "app", "last", "url", "ptype", "auth", "xid", "split",
             "ename", "etyp", "ver", "sink", "targets", "source", "medium",
             "campaign", "term", "ref", "aff", "browser", "device", "os", "tz",
             "outcome", "username", "culture")
TAG_OF = {name: i + 1 for i, name in enumerate(TEXT_TAGS)}
PARAM = 0x80

HEAD = struct.Struct("<BBq16s16s16s")
F64 = struct.Struct("<d")
I64 = struct.Struct("<q")
PAIR_F64 = struct.Struct("<dd")
PAIR_I64 = struct.Struct("<qq")

BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


class RecordError(ValueError):
    """Bytes that are not a well-formed event record."""


# ---- encoding ----------------------------------------------------------------
def _varint(n, out):
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _text(value, out):
    data = value.encode("utf-8", "surrogatepass")
    _varint(len(data), out)
    out += data


def encode(event):
    """The record of an event dict (engine/event.py); ``bhash`` and
    ``country`` are left out (``decode`` derives them)."""
    flags = (F_FIRST if event["first"] else 0) | (F_NEW_VISITOR if event.get("new_visitor") else 0)
    tail = bytearray()
    latlon, vp = event.get("latlon"), event.get("vp")
    duration, score = event.get("duration"), event.get("score")
    if latlon is not None:
        flags |= F_LATLON
        tail += PAIR_F64.pack(*latlon)
    if vp is not None:
        flags |= F_VP
        tail += PAIR_I64.pack(*vp)
    if duration is not None:
        flags |= F_DURATION
        tail += I64.pack(duration)
    if score is not None:
        flags |= F_SCORE
        tail += F64.pack(score)
    for tag, name in enumerate(TEXT_TAGS, 1):
        value = event.get(name)
        if value is not None:
            tail.append(tag)
            _text(value, tail)
    for key, value in event["params"].items():
        tail.append(PARAM)
        _text(key, tail)
        _text(value, tail)
    head = HEAD.pack(KIND_EVENT, flags, event["created"], _uuid.UUID(event["eid"]).bytes,
                     _uuid.UUID(event["vid"]).bytes, _uuid.UUID(event["sid"]).bytes)
    return head + bytes(tail)


# ---- decoding ----------------------------------------------------------------
def _read_varint(data, i):
    n = shift = 0
    while True:
        if i >= len(data) or shift > 28:
            raise RecordError("truncated or oversized length")
        byte = data[i]
        i += 1
        n |= (byte & 0x7F) << shift
        if byte < 0x80:
            return n, i
        shift += 7


def _read_text(data, i):
    n, i = _read_varint(data, i)
    if i + n > len(data):
        raise RecordError("text runs past the end of the record")
    return data[i:i + n].decode("utf-8", "surrogatepass"), i + n


def fnv1a32_base36(text):
    """``bhash``: FNV-1a 32 of the UTF-8 bytes (errors replaced), base 36."""
    h = 2166136261
    for byte in text.encode("utf-8", "replace"):
        h = ((h ^ byte) * 16777619) & 0xFFFFFFFF
    if h == 0:
        return "0"
    digits = []
    while h:
        h, rest = divmod(h, 36)
        digits.append(BASE36[rest])
    return "".join(reversed(digits))


def _uuid_text(raw):
    return str(_uuid.UUID(bytes=raw))


def decode(data):
    """The event dict of a record (the inverse of ``encode``, derived columns
    added). Key order: eid vid sid created first, the text columns in tag
    order, latlon vp duration score, bhash country, new_visitor, params."""
    if len(data) < HEAD.size:
        raise RecordError("record shorter than its header")
    kind, flags, created, eid, vid, sid = HEAD.unpack_from(data)
    if kind != KIND_EVENT:
        raise RecordError(f"unknown record kind {kind}")
    i = HEAD.size
    numbers = {}
    for flag, name, fmt in ((F_LATLON, "latlon", PAIR_F64), (F_VP, "vp", PAIR_I64),
                            (F_DURATION, "duration", I64), (F_SCORE, "score", F64)):
        if flags & flag:
            if i + fmt.size > len(data):
                raise RecordError(f"record ends inside {name}")
            value = fmt.unpack_from(data, i)
            numbers[name] = list(value) if len(value) == 2 else value[0]
            i += fmt.size
    event = {"eid": _uuid_text(eid), "vid": _uuid_text(vid), "sid": _uuid_text(sid),
             "created": created, "first": bool(flags & F_FIRST)}
    params = {}
    last_tag = 0
    while i < len(data):
        tag = data[i]
        i += 1
        if tag == PARAM:
            key, i = _read_text(data, i)
            params[key], i = _read_text(data, i)
        elif 0 < tag <= len(TEXT_TAGS) and tag > last_tag and not params:
            event[TEXT_TAGS[tag - 1]], i = _read_text(data, i)
            last_tag = tag
        else:
            raise RecordError(f"bad field tag {tag} at byte {i - 1}")
    event.update(numbers)
    browser = event.get("browser")
    if browser is not None:
        event["bhash"] = fnv1a32_base36(browser)
    country = ZONES.get(event.get("tz"))
    if country is not None:
        event["country"] = country
    if flags & F_NEW_VISITOR:
        event["new_visitor"] = True
    event["params"] = params
    return event


def canonical(event):
    """An event dict in ``decode``'s key order (to compare with a decoded one)."""
    return decode(encode(event))
