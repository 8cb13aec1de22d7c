"""Reference (pure Python) request parser: the readable statement of the rules.

``engine._parse`` (Cython) is the fast implementation used in production;
this module is written separately, plainly, and is what the compiled one is
tested against (tests/unit/test_parse_equivalence.py checks that both give
the very same dict, key order included, for generated inputs). Where the two
disagree, this file and DESIGN.md are right.

API
===

``TimeUUIDGen(node=None, clock_seq=None).new() -> str``
    Version 1 (time-based) UUIDs, canonical lowercase. The 60-bit timestamp
    counts 100 ns intervals since 1582-10-15 and comes from ``time.time_ns()``;
    if the clock did not move (or went back) since the last id, the last
    timestamp + 1 is used, so the ids of one generator are strictly
    increasing and never repeat. ``node=None`` picks a random 48-bit node
    with the multicast bit set (RFC 4122 §4.5); ``clock_seq=None`` a random
    14-bit clock sequence.

``parse_track(path, query, body, ip, user_agent, accept_language, cookie_vid,
now_ms, ids, url_filter) -> dict``
    Turns one track request into an event dict (see engine/event.py).
    ``ids`` is anything with ``.new() -> str``. Raises
    ``engine.errors.ParseError`` for a body that is not a JSON object or a
    path with a malformed percent-escape, and nothing else for any input.

Rules
=====

1. Input pairs
   GET (``body is None``): ``path`` is the raw URL path. One leading "/" is
   stripped and the rest split on "/". Segments pair up as (0,1), (2,3), ...;
   the first pair (route and version, ``tr/v1``) is skipped. Each segment is
   percent-decoded (``%xx`` only; "+" stays "+"), then decoded as UTF-8 with
   errors="replace". A pair whose key is empty is skipped; a trailing key
   without a value gets "". Then the query string, if any: split on "&",
   empty pieces skipped, each piece split on its first "=" (no "=" -> value
   ""), key and value decoded form-style ("+" -> space, then ``%xx``, then
   UTF-8 "replace"). Query pairs overwrite path pairs of the same key; a
   key repeated in the query keeps its FIRST value (Go's ``url.Values.Get``).
   GET values are all strings.

   POST (``body`` is bytes): the query pairs as above, then the body, which
   must be a JSON object (``orjson.loads``; otherwise ParseError
   "malformed JSON: <orjson message, cut to 80 chars>" or "JSON body must be
   an object"). Body keys overwrite query keys; body values keep their JSON
   types. Path tuplets are ignored for POST.

2. Stringifying a value (text columns and params): str as is; bool ->
   "true"/"false"; int and float -> ``str(v)``; dict and list ->
   ``orjson.dumps(v).decode()``; JSON null -> the key is absent (stored
   nowhere).

3. Columns. Text columns, stringified: uid app last url ptype auth xid split
   ename etyp sink targets source medium campaign term ref aff device os tz
   outcome username; input key "version" fills column "ver". ``url`` and
   ``last`` go through ``url_filter`` (engine/urlfilter.py: the config's
   ``UrlPrefixFilter``) when it is not None.
   - vid, sid: a valid UUID (8-4-4-4-12 hex with hyphens, or 32 hex digits,
     any case, not the nil UUID) normalised to lowercase hyphenated form;
     anything else goes to params under the same key, stringified.
   - duration: int from an int, from a finite float (truncated toward zero)
     or from a numeric string; otherwise params["duration"].
   - score: float from an int, a float or a numeric string, finite only;
     otherwise params["score"].
   - lat + lon: both present, finite, -90<=lat<=90, -180<=lon<=180 ->
     latlon = [lat, lon] (floats); otherwise each present one goes to params.
   - w + h: both present, ints >= 0 (int, integral float or digit string)
     -> vp = [w, h]; otherwise each present one goes to params.
   - first: consumed (see identity).
   - params: a JSON object contributes its pairs to params (values
     stringified, nulls skipped); any other value is params["params"].
     Every other top-level key (including a client's eid, created, and the
     server-derived names ip browser bhash country culture ver vp latlon
     new_visitor) goes to params, stringified, overwriting a same-named pair
     from the params object.
   - UTM: utm_source/medium/campaign/term fill source/medium/campaign/term
     and utm_content fills params["content"], unless the request also has an
     explicit (non-null) source/medium/campaign/term/content key, which
     wins. utm_ keys are consumed either way.

4. Server-derived: ip = the ip argument. With a user agent: browser = it,
   bhash = FNV-1a 32 of its UTF-8 bytes (errors="replace") in lowercase
   base 36. culture = first comma-separated Accept-Language item, cut at ";",
   stripped (absent when empty). country = the zone1970 country of tz
   (engine.zones.ZONES), when tz is known there.

5. Identity, ``ids.new()`` called in this order: eid (always, server
   assigned; a client's eid stays in params). vid = the request's valid vid,
   else a valid cookie_vid, else ``ids.new()`` and the visitor is new
   (``new_visitor: True`` in the event). sid = the request's valid sid, else
   the vid for a new visitor, else ``ids.new()``. first = new visitor, or the
   request's "first" is anything but "false" once stringified: a request
   with no (or a null) "first" IS first, as in the Go collector
   (``isNew || v["first"] != "false"``). Stores keep the earliest event per
   visitor and session, so this only decides which events may win.

6. Output: always eid, vid, sid, created (= now_ms; a client's created stays
   in params), first, ip; then the columns the request filled, in the order
   of their keys in the merged input; then source/medium/campaign/term that
   came only from utm_ keys; latlon; vp; browser; bhash; culture; country;
   new_visitor (only when True); params last (always, possibly empty).

Decisions beyond DESIGN.md
==========================

- A numeric string is ASCII only: ``[+-]?(digits[.digits?] | .digits)
  ([eE][+-]?digits)?`` - no spaces, no "_", no "nan"/"inf", no non-ASCII
  digits (Python's ``float()`` would accept all of those). A digit string
  (w, h) is ``[0-9]+``.
- Integers (duration, w, h) must fit a signed 64-bit integer; a larger value
  goes to params like any other unusable value.
- Booleans are not numbers: ``"duration": true`` goes to params as "true".
- Empty query keys (``?=x``) are skipped, as empty path keys are.
- A malformed ``%`` escape (``%zz``, a trailing ``%4``) in a path segment
  makes the request invalid (ParseError, answered 400), as the Go
  collector's net/http refuses such a request target; in the query it is
  kept literally.
- Percent-decoding happens on bytes, before the UTF-8 decode, so an escaped
  multi-byte character decodes to that character.
- A JSON value nested too deeply for ``orjson.dumps`` (over 254 levels) to
  stringify raises ParseError("JSON value nested too deeply").
"""

import math
import re
import secrets
import time

import orjson

from engine.errors import ParseError
from engine.zones import ZONES

__all__ = ["TimeUUIDGen", "parse_track", "encode_track", "encode_batch", "cookie_value"]


# --------------------------------------------------------------------------
# Time-based UUIDs

# 100 ns intervals between 1582-10-15 (the UUID epoch) and 1970-01-01.
UUID_EPOCH_OFFSET = 0x01B21DD213814000


class TimeUUIDGen:
    """Generator of version 1 UUID strings, strictly increasing timestamps.
    ``frozen_ns`` (tests): the clock reads this fixed time."""

    def __init__(self, node=None, clock_seq=None, frozen_ns=None):
        if node is None:
            node = secrets.randbits(48) | (1 << 40)   # multicast bit
        if clock_seq is None:
            clock_seq = secrets.randbits(14)
        if not 0 <= node < (1 << 48):
            raise ValueError("node must be a 48-bit unsigned integer")
        if not 0 <= clock_seq < (1 << 14):
            raise ValueError("clock_seq must be a 14-bit unsigned integer")
        self.node = node
        self.clock_seq = clock_seq
        self.frozen_ns = frozen_ns
        self._last = 0

    def new(self):
        now = time.time_ns() if self.frozen_ns is None else self.frozen_ns
        timestamp = now // 100 + UUID_EPOCH_OFFSET
        if timestamp <= self._last:
            timestamp = self._last + 1
        self._last = timestamp
        timestamp &= (1 << 60) - 1

        time_low = timestamp & 0xFFFFFFFF
        time_mid = (timestamp >> 32) & 0xFFFF
        time_hi_and_version = ((timestamp >> 48) & 0x0FFF) | 0x1000
        clock_seq_hi = ((self.clock_seq >> 8) & 0x3F) | 0x80   # RFC 4122 variant
        clock_seq_low = self.clock_seq & 0xFF
        return "%08x-%04x-%04x-%02x%02x-%012x" % (
            time_low, time_mid, time_hi_and_version,
            clock_seq_hi, clock_seq_low, self.node)


# --------------------------------------------------------------------------
# Names

TEXT_COLUMNS = {
    "uid": "uid", "app": "app", "last": "last", "url": "url", "ptype": "ptype",
    "auth": "auth", "xid": "xid", "split": "split", "ename": "ename",
    "etyp": "etyp", "sink": "sink", "targets": "targets", "source": "source",
    "medium": "medium", "campaign": "campaign", "term": "term", "ref": "ref",
    "aff": "aff", "device": "device", "os": "os", "tz": "tz",
    "outcome": "outcome", "username": "username",
    "version": "ver",
}

# utm_ key -> (explicit key that wins over it, where its value goes)
UTM_KEYS = {
    "utm_source": "source",
    "utm_medium": "medium",
    "utm_campaign": "campaign",
    "utm_term": "term",
    "utm_content": "content",     # goes to params["content"]
}

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1

HEX_DIGITS = "0123456789abcdefABCDEF"
NIL_UUID = "00000000-0000-0000-0000-000000000000"

NUMBER_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
INTEGER_RE = re.compile(r"[+-]?[0-9]+")
DIGITS_RE = re.compile(r"[0-9]+")

BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


# --------------------------------------------------------------------------
# Decoding the URL

def percent_decode(raw, plus_is_space, strict=False):
    """Decode %xx escapes in ``raw`` (bytes), then UTF-8 with replacement.
    ``strict`` (path segments): a "%" not followed by two hex digits is a
    ParseError; otherwise it is kept literally."""
    if plus_is_space:
        raw = raw.replace(b"+", b" ")
    out = bytearray()
    i = 0
    n = len(raw)
    hexbytes = HEX_DIGITS.encode("ascii")
    while i < n:
        byte = raw[i]
        if (byte == 0x25 and i + 2 < n
                and raw[i + 1] in hexbytes and raw[i + 2] in hexbytes):
            out.append(int(raw[i + 1:i + 3], 16))
            i += 3
        elif byte == 0x25 and strict:
            raise ParseError("malformed percent-encoding in the path")
        else:
            out.append(byte)
            i += 1
    return out.decode("utf-8", errors="replace")


def path_pairs(path):
    """Key/value pairs of a tuplet path, the route pair (tr/v1) skipped."""
    if path.startswith(b"/"):
        path = path[1:]
    segments = path.split(b"/")
    pairs = []
    for i in range(2, len(segments), 2):
        key = percent_decode(segments[i], plus_is_space=False, strict=True)
        if i + 1 < len(segments):
            value = percent_decode(segments[i + 1], plus_is_space=False, strict=True)
        else:
            value = ""
        if key:
            pairs.append((key, value))
    return pairs


def query_pairs(query):
    """Key/value pairs of a form-encoded query string (bytes)."""
    pairs = []
    for piece in query.split(b"&"):
        if not piece:
            continue
        key, _, value = piece.partition(b"=")
        key = percent_decode(key, plus_is_space=True)
        if key:
            pairs.append((key, percent_decode(value, plus_is_space=True)))
    return pairs


def decode_body(body):
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ParseError("malformed JSON: " + str(exc)[:80]) from None
    if not isinstance(data, dict):
        raise ParseError("JSON body must be an object")
    return data


# --------------------------------------------------------------------------
# Values

def stringify(value):
    """The text form of a non-null input value."""
    if isinstance(value, str):
        return value
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (dict, list)):
        try:
            return orjson.dumps(value).decode("utf-8")
        except orjson.JSONEncodeError:
            raise ParseError("JSON value nested too deeply") from None
    return str(value)


def is_number(value):
    """int or float, but not bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def int64_from_digits(text):
    """int(text) for text matching INTEGER_RE, or None outside int64."""
    digits = text.lstrip("+-").lstrip("0")
    if len(digits) > 19:
        return None
    number = int(text)
    if INT64_MIN <= number <= INT64_MAX:
        return number
    return None


def int64_from_float(number):
    """Truncate a float toward zero, or None when not finite or outside int64."""
    if not math.isfinite(number):
        return None
    if not (-9223372036854775808.0 <= number < 9223372036854775808.0):
        return None
    return int(number)


def to_duration(value):
    """int, or None when the value is not usable as a duration."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if INT64_MIN <= value <= INT64_MAX else None
    if isinstance(value, float):
        return int64_from_float(value)
    if isinstance(value, str):
        if INTEGER_RE.fullmatch(value):
            return int64_from_digits(value)
        if NUMBER_RE.fullmatch(value):
            return int64_from_float(float(value))
    return None


def to_float(value):
    """Finite float, or None."""
    if is_number(value):
        number = float(value)
    elif isinstance(value, str) and NUMBER_RE.fullmatch(value):
        number = float(value)
    else:
        return None
    return number if math.isfinite(number) else None


def to_size(value):
    """Non-negative int for w and h, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= INT64_MAX else None
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer() and value >= 0:
            return int64_from_float(value)
        return None
    if isinstance(value, str) and DIGITS_RE.fullmatch(value):
        return int64_from_digits(value)
    return None


def normalize_uuid(value):
    """Canonical lowercase form of a UUID string, or None if not valid."""
    if not isinstance(value, str):
        return None
    if len(value) == 36:
        for i, char in enumerate(value):
            if i in (8, 13, 18, 23):
                if char != "-":
                    return None
            elif char not in HEX_DIGITS:
                return None
        hex32 = value.replace("-", "")
    elif len(value) == 32:
        if any(char not in HEX_DIGITS for char in value):
            return None
        hex32 = value
    else:
        return None
    hex32 = hex32.lower()
    canonical = "-".join(
        (hex32[0:8], hex32[8:12], hex32[12:16], hex32[16:20], hex32[20:32]))
    if canonical == NIL_UUID:
        return None
    return canonical


def fnv1a32(data):
    h = 2166136261
    for byte in data:
        h ^= byte
        h = (h * 16777619) & 0xFFFFFFFF
    return h


def base36(number):
    if number == 0:
        return "0"
    digits = []
    while number:
        number, rest = divmod(number, 36)
        digits.append(BASE36[rest])
    return "".join(reversed(digits))


def first_language(accept_language):
    tag = accept_language.split(",", 1)[0].split(";", 1)[0].strip()
    return tag or None


# --------------------------------------------------------------------------
# The request

def parse_track(path, query, body, ip, user_agent, accept_language,
                cookie_vid, now_ms, ids, url_filter):
    """One track request -> event dict. See the module docstring."""
    # 1. Merge the input pairs: later sources overwrite earlier ones.
    data = {}
    if body is None:
        for key, value in path_pairs(path):
            data[key] = value
    data.update(first_query_values(query))
    if body is not None:
        data.update(decode_body(body))
    return event_from(data, ip, user_agent, accept_language, cookie_vid, now_ms, ids,
                      url_filter)


def first_query_values(query):
    """The query's pairs as a dict; a repeated key keeps its first value."""
    data = {}
    if query:
        for key, value in query_pairs(query):
            if key not in data:
                data[key] = value
    return data


def event_from(data, ip, user_agent, accept_language, cookie_vid, now_ms, ids, url_filter):
    """Rules 2 to 6 for the merged input pairs ``data``."""
    columns = {}
    params = {}

    # 2. The params object first, so top-level keys overwrite its pairs.
    nested = data.get("params")
    if isinstance(nested, dict):
        for key, value in nested.items():
            if value is not None:
                params[key] = stringify(value)

    request_vid = None
    request_sid = None
    first_value = None
    coords = {}      # lat, lon, w, h as sent
    utm = {}         # utm_ key -> stringified value

    # 3. Every top-level key, in input order.
    for key, value in data.items():
        if value is None:
            continue
        if key in TEXT_COLUMNS:
            text = stringify(value)
            if url_filter is not None and (key == "url" or key == "last"):
                text = url_filter(text)
            columns[TEXT_COLUMNS[key]] = text
        elif key == "vid" or key == "sid":
            uuid = normalize_uuid(value)
            if uuid is None:
                params[key] = stringify(value)
            elif key == "vid":
                request_vid = uuid
            else:
                request_sid = uuid
        elif key == "duration":
            duration = to_duration(value)
            if duration is None:
                params[key] = stringify(value)
            else:
                columns["duration"] = duration
        elif key == "score":
            score = to_float(value)
            if score is None:
                params[key] = stringify(value)
            else:
                columns["score"] = score
        elif key in ("lat", "lon", "w", "h"):
            coords[key] = value
        elif key == "first":
            first_value = stringify(value)
        elif key == "params":
            if not isinstance(value, dict):
                params[key] = stringify(value)
        elif key in UTM_KEYS:
            utm[key] = stringify(value)
        else:
            params[key] = stringify(value)

    # 4. UTM: an explicit key wins over its utm_ key.
    for utm_key, target in UTM_KEYS.items():
        if utm_key not in utm or data.get(target) is not None:
            continue
        if target == "content":
            params["content"] = utm[utm_key]
        else:
            columns[target] = utm[utm_key]

    # 5. Pairs that only make a column together.
    lat, lon = to_float(coords.get("lat")), to_float(coords.get("lon"))
    if lat is not None and lon is not None and -90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0:
        columns["latlon"] = [lat, lon]
    else:
        for key in ("lat", "lon"):
            if key in coords:
                params[key] = stringify(coords[key])

    width, height = to_size(coords.get("w")), to_size(coords.get("h"))
    if width is not None and height is not None:
        columns["vp"] = [width, height]
    else:
        for key in ("w", "h"):
            if key in coords:
                params[key] = stringify(coords[key])

    # 6. Identity: ids.new() for eid, then vid, then sid.
    eid = ids.new()
    new_visitor = False
    vid = request_vid or normalize_uuid(cookie_vid)
    if vid is None:
        vid = ids.new()
        new_visitor = True
    if request_sid is not None:
        sid = request_sid
    elif new_visitor:
        sid = vid
    else:
        sid = ids.new()
    first = new_visitor or first_value != "false"

    # 7. The event.
    event = {"eid": eid, "vid": vid, "sid": sid, "created": now_ms,
             "first": first, "ip": ip}
    event.update(columns)
    if user_agent is not None:
        event["browser"] = user_agent
        event["bhash"] = base36(fnv1a32(user_agent.encode("utf-8", errors="replace")))
    if accept_language is not None:
        culture = first_language(accept_language)
        if culture is not None:
            event["culture"] = culture
    tz = columns.get("tz")
    if tz is not None and tz in ZONES:
        event["country"] = ZONES[tz]
    if new_visitor:
        event["new_visitor"] = True
    event["params"] = params
    return event


# --------------------------------------------------------------------------
# The record (what the request path spools)

def cookie_value(raw, name=b"vid"):
    """The value of cookie ``name`` in a Cookie header (bytes), first one
    wins, surrounding double quotes removed; None when absent."""
    for part in raw.split(b";"):
        key, sep, value = part.strip().partition(b"=")
        if sep and key == name:
            return value.strip(b'"')
    return None


def encode_track(path, query, body, ip, user_agent, accept_language, cookie_vid,
                 now_ms, ids, url_filter=None):
    """The spool record of one track request, from its raw parts: the
    User-Agent header bytes (decoded UTF-8, errors replaced), the
    Accept-Language header bytes (Latin-1), the ``vid`` cookie's raw value.
    What engine._parse.Encoder writes, byte for byte (engine/record.py)."""
    from engine import record
    event = parse_track(
        path, query, body, ip,
        None if user_agent is None else user_agent.decode("utf-8", "replace"),
        None if accept_language is None else accept_language.decode("latin-1"),
        None if cookie_vid is None else cookie_vid.decode("latin-1"),
        now_ms, ids, url_filter)
    return record.encode(event)


class BatchTooLarge(ParseError):
    """A batch over MaxBatchEvents (answered 413)."""


def batch_items(body, max_events):
    """The elements of a JSON array body (ParseError, BatchTooLarge)."""
    try:
        items = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ParseError("malformed JSON: " + str(exc)[:80]) from None
    if not isinstance(items, list):
        raise ParseError("batch body must be a JSON array")
    if not items:
        raise ParseError("batch body must hold at least one event")
    if len(items) > max_events:
        raise BatchTooLarge("batch of %d events, over MaxBatchEvents (%d)"
                            % (len(items), max_events))
    return items


def encode_batch(path, query, body, ip, user_agent, accept_language, cookie_vid,
                 now_ms, ids, url_filter=None, max_events=1000):
    """The records of a batch: a JSON array body, one event per element, each
    read as a JSON object body of its own (the query's pairs under each), each
    with its own eid. Elements without a vid are the cookie's visitor; with
    no cookie, the first such element mints the visitor and the rest of the
    batch is that visitor (as its cookie would say). All or nothing: a bad
    element is a ParseError naming its index, and nothing is kept."""
    from engine import record
    items = batch_items(body, max_events)
    user_agent = None if user_agent is None else user_agent.decode("utf-8", "replace")
    accept_language = None if accept_language is None else accept_language.decode("latin-1")
    cookie = None if cookie_vid is None else cookie_vid.decode("latin-1")
    query_data = first_query_values(query)
    records = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise ParseError("element %d: JSON body must be an object" % index)
        try:
            event = event_from({**query_data, **item}, ip, user_agent, accept_language,
                               cookie, now_ms, ids, url_filter)
        except ParseError as exc:
            raise ParseError("element %d: %s" % (index, exc)) from None
        if event.get("new_visitor"):
            cookie = event["vid"]
        records.append(record.encode(event))
    return records
