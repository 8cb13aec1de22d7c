"""Property tests: the compiled parser and the reference give identical output.

Two levels:
- the record (what the request path spools): ``_parse.encode_track`` and
  ``parse_ref.encode_track`` must produce the same bytes from the same raw
  request parts (headers as bytes), with ids from the same frozen-clock
  generator; so types (1 vs 1.0 vs "1", -0.0 vs 0.0), params order and ids
  all have to agree;
- the event a store reads back: ``_parse.decode`` of that record equals the
  reference's event dict, and equals ``record.decode``.
For raw byte soup, both must only ever raise ParseError.
"""

import json
from urllib.parse import quote, quote_plus

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import _parse, parse_ref, record
from engine.errors import ParseError
from engine.urlfilter import url_filter

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])

COLUMN_KEYS = [
    "uid", "app", "last", "url", "ptype", "auth", "xid", "split", "ename",
    "etyp", "sink", "targets", "source", "medium", "campaign", "term", "ref",
    "aff", "device", "os", "tz", "outcome", "username", "version",
    "vid", "sid", "eid", "created", "duration", "score", "lat", "lon", "w",
    "h", "first", "params", "utm_source", "utm_medium", "utm_campaign",
    "utm_term", "utm_content", "content", "ip", "browser", "bhash", "country",
    "culture", "ver", "vp", "latlon", "new_visitor",
]
keys = st.one_of(st.sampled_from(COLUMN_KEYS), st.text(max_size=6))

uuids = st.one_of(
    st.uuids().map(str),
    st.uuids().map(lambda u: str(u).upper()),
    st.uuids().map(lambda u: u.hex),
    st.just("00000000-0000-0000-0000-000000000000"),
    st.uuids().map(lambda u: str(u)[:-1] + "g"),
    st.uuids().map(lambda u: str(u)[1:]),
)
numeric_text = st.one_of(
    st.from_regex(r"\A[+-]?([0-9]{1,25}(\.[0-9]{0,5})?|\.[0-9]{1,5})([eE][+-]?[0-9]{1,4})?\Z"),
    st.integers().map(str),
    st.floats().map(str),
    st.sampled_from(["nan", "inf", "-inf", "1_0", " 1", "1e", ".", "-", "+.e1", "0x1f",
                     "9223372036854775807", "9223372036854775808", "-9223372036854775808",
                     "-9223372036854775809", "00000000000000000000001", "\u0661\u0662",
                     "90", "-90", "180", "-180.0", "90.0000001", "1.0", "-0", "-0.0"]),
)
coordinate_text = st.one_of(
    st.floats(-200, 200).map(str), st.integers(-200, 200).map(str),
    st.floats(-1e6, 1e6).map(lambda f: "%.3e" % f), numeric_text)
single_pairs = st.lists(st.one_of(
    st.tuples(st.sampled_from(["lat", "lon"]), coordinate_text),
    st.tuples(st.sampled_from(["w", "h", "duration", "score"]),
              st.one_of(st.integers(-5, 5000).map(str), numeric_text)),
    st.tuples(st.just("tz"), st.sampled_from(
        ["America/Los_Angeles", "Europe/Zurich", "Asia/Tokyo", "US/Pacific", "Mars/Base"])),
    st.tuples(st.sampled_from(["vid", "sid"]), st.one_of(uuids, st.text(max_size=3))),
), max_size=4)
both_pairs = st.one_of(
    st.just([]),
    st.tuples(st.floats(-95, 95), st.floats(-185, 185)).map(
        lambda t: [("lat", str(t[0])), ("lon", str(t[1]))]),
    st.tuples(st.integers(-1, 5000), st.integers(0, 5000)).map(
        lambda t: [("w", str(t[0])), ("h", str(t[1]))]),
)
focused_pairs = st.builds(lambda a, b, c: a + b + c, single_pairs, both_pairs, both_pairs)
text_values = st.one_of(numeric_text, uuids, st.text(max_size=12),
                        st.sampled_from(["true", "false", "", "America/Los_Angeles",
                                         "Europe/Zurich", "https://ex.com/p"]))


def encode_segment(draw, value):
    """Percent-encode a str some way, or pass bytes through."""
    how = draw(st.integers(0, 3))
    if how == 0:
        return quote(value, safe="").encode("ascii")
    if how == 1:
        return quote(value, safe="+:@=&,").encode("ascii")
    if how == 2:
        return value.replace("/", "%2F").encode("utf-8", "surrogatepass")
    return draw(st.binary(max_size=8)).replace(b"/", b"")


@st.composite
def tuplet_paths(draw):
    parts = [b"tr", draw(st.sampled_from([b"v1", b"v2", b""]))]
    pairs = draw(st.lists(st.tuples(keys, text_values), max_size=8)) + draw(focused_pairs)
    for key, value in draw(st.permutations(pairs)):
        parts.append(encode_segment(draw, key))
        parts.append(encode_segment(draw, value))
    if draw(st.booleans()):
        parts = parts[:-1]      # trailing key without a value
    path = b"/".join(parts)
    if draw(st.integers(0, 5)):
        path = b"/" + path
    if draw(st.integers(0, 4)) == 0:
        path += b"/"
    return path


@st.composite
def query_strings(draw):
    if draw(st.integers(0, 4)) == 0:
        return None
    pieces = []
    pairs = draw(st.lists(st.tuples(keys, text_values), max_size=6)) + draw(focused_pairs)
    for key, value in draw(st.permutations(pairs)):
        how = draw(st.sampled_from([0, 0, 1, 1, 2, 3, 4]))
        if how == 0:
            pieces.append(quote_plus(key).encode() + b"=" + quote_plus(value).encode())
        elif how == 1:
            pieces.append(quote(key).encode() + b"=" + quote(value, safe="=+").encode())
        elif how == 2:
            pieces.append(quote_plus(key).encode())
        elif how == 3:
            pieces.append(b"")
        else:
            pieces.append(draw(st.binary(max_size=10)))
    return b"&".join(pieces)


json_scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True),   # orjson writes nan/inf as null
    st.text(max_size=10), uuids, numeric_text,
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(st.lists(children, max_size=3),
                               st.dictionaries(st.text(max_size=4), children, max_size=3)),
    max_leaves=8,
)


focused_json = st.one_of(
    st.floats(-200, 200), st.integers(-200, 5000), st.floats(0, 5000).map(float.__floor__).map(float),
    coordinate_text, st.booleans(), st.none())


@st.composite
def json_bodies(draw):
    data = draw(st.dictionaries(keys, json_values, max_size=10))
    for key, value in draw(focused_pairs):
        data[key] = value if draw(st.booleans()) else draw(focused_json)
    if draw(st.booleans()):
        data["params"] = draw(st.one_of(
            st.dictionaries(keys, json_values, max_size=5), json_values))
    how = draw(st.sampled_from([9, 8, 7, 6, 5, 4, 3, 2, 1, 0]))
    if how == 0:    # not an object
        return orjson.dumps(draw(json_values))
    if how == 1:    # NaN / Infinity literals or truncated text: malformed
        text = json.dumps(data, allow_nan=True).encode()
        return text[:draw(st.integers(0, len(text)))]
    if how == 2:    # big numbers as literals
        return json.dumps({**data, draw(keys): draw(st.sampled_from(
            [10**30, -(10**25), 1e308, 2**64, 2**63])), }).encode()
    return orjson.dumps(data)


headers = st.fixed_dictionaries({
    "ip": st.sampled_from(["203.0.113.9", "::1"]),
    "user_agent": st.one_of(st.none(), st.binary(max_size=30), st.text(max_size=30).map(
        lambda t: t.encode("utf-8", "surrogatepass")),
                            st.sampled_from([b"Mozilla/5.0 (X11; Linux x86_64)", b"",
                                             b"bot \xed\xb3\xbf\xff", b"Z\xc3\xbcrich"])),
    "accept_language": st.one_of(st.none(), st.binary(max_size=20),
                                 st.sampled_from([b"en-US,en;q=0.9", b" ;q=1", b"fr-CH, fr",
                                                  b"\xa0de\x85,x", b"\x1c;"])),
    "cookie_vid": st.one_of(st.none(), uuids.map(str.encode), st.binary(max_size=5)),
    "url_prefix_filter": st.sampled_from(["", "https://ex\\.com", "h", "/", "(h)", "^$",
                                          r"http(s|)://(ex\.com|x)(:[0-9]*|)(/.*)"]),
    "now_ms": st.integers(0, 2**45),
})


def run(impl, path, query, body, h):
    """(outcome, record bytes or error text, ids used)."""
    ids = impl.TimeUUIDGen(node=0x010203040506, clock_seq=7, frozen_ns=1_700_000_000_000_000_000)
    try:
        data = impl.encode_track(path, query, body, h["ip"], h["user_agent"],
                                 h["accept_language"], h["cookie_vid"], h["now_ms"], ids,
                                 url_filter(h["url_prefix_filter"]))
    except ParseError as exc:
        return ("ParseError", str(exc), ids.new())
    return ("ok", data, ids.new())


def assert_same(path, query, body, h):
    compiled = run(_parse, path, query, body, h)
    reference = run(parse_ref, path, query, body, h)
    assert compiled == reference
    if compiled[0] == "ok":
        event = _parse.decode(compiled[1])
        assert event == record.decode(compiled[1])
        ref_ids = parse_ref.TimeUUIDGen(node=0x010203040506, clock_seq=7,
                                        frozen_ns=1_700_000_000_000_000_000)
        expected = parse_ref.parse_track(
            path, query, body, h["ip"],
            None if h["user_agent"] is None else h["user_agent"].decode("utf-8", "replace"),
            None if h["accept_language"] is None else h["accept_language"].decode("latin-1"),
            None if h["cookie_vid"] is None else h["cookie_vid"].decode("latin-1"),
            h["now_ms"], ref_ids, url_filter(h["url_prefix_filter"]))
        assert repr_sorted(event) == repr_sorted(expected)


def repr_sorted(event):
    """repr with keys sorted: value types (1 vs 1.0, -0.0) must agree, not key order."""
    return repr(sorted(event.items()))


@settings(max_examples=500, **SETTINGS)
@given(path=tuplet_paths(), query=query_strings(), h=headers)
def test_get_equivalence(path, query, h):
    assert_same(path, query, None, h)


@settings(max_examples=400, **SETTINGS)
@given(query=query_strings(), body=json_bodies(), h=headers)
def test_post_equivalence(query, body, h):
    assert_same(b"/tr/v1/ref/ignored", query, body, h)


@settings(max_examples=1200, **SETTINGS)
@given(path=st.binary(max_size=80), query=st.one_of(st.none(), st.binary(max_size=60)),
       body=st.one_of(st.none(), st.binary(max_size=60)), h=headers)
def test_raw_bytes_only_parse_error_and_equivalent(path, query, body, h):
    # run() lets anything but ParseError propagate, failing the test.
    assert_same(path, query, body, h)


@settings(max_examples=300, **SETTINGS)
@given(raw=st.one_of(st.binary(max_size=60), st.lists(st.one_of(
    st.sampled_from([b"vid=", b"vid", b'"', b";", b" ", b"a=b", b"VID=1"]),
    uuids.map(str.encode), st.binary(max_size=6)), max_size=6).map(b"".join)))
def test_cookie_vid_equivalence(raw):
    assert _parse.cookie_vid(raw) == parse_ref.cookie_value(raw)


@settings(max_examples=200, **SETTINGS)
@given(body=st.dictionaries(keys, json_values, max_size=10), h=headers)
def test_events_are_well_formed(body, h):
    try:
        data = _parse.encode_track(b"/tr/v1", None, orjson.dumps(body), h["ip"],
                                   h["user_agent"], h["accept_language"], h["cookie_vid"],
                                   h["now_ms"], _parse.TimeUUIDGen(),
                                   url_filter(h["url_prefix_filter"]))
    except ParseError:
        return
    event = _parse.decode(data)
    assert {"eid", "vid", "sid", "created", "first", "ip", "params"} <= event.keys()
    assert type(event["first"]) is bool
    assert all(type(k) is str and type(v) is str for k, v in event["params"].items())
    assert None not in event.values()
    if "latlon" in event:
        lat, lon = event["latlon"]
        assert -90 <= lat <= 90 and -180 <= lon <= 180
    if "vp" in event:
        assert all(type(x) is int and x >= 0 for x in event["vp"])
    if "duration" in event:
        assert type(event["duration"]) is int


@st.composite
def batch_bodies(draw):
    how = draw(st.integers(0, 9))
    if how == 0:
        return orjson.dumps(draw(json_values))                      # not an array
    if how == 1:
        return b"[" + orjson.dumps(draw(st.dictionaries(keys, json_values, max_size=3)))  # torn
    items = draw(st.lists(st.one_of(
        st.dictionaries(keys, json_values, max_size=6),
        st.dictionaries(st.sampled_from(["vid", "sid", "first", "ename"]),
                        st.one_of(uuids, st.text(max_size=3)), max_size=3),
        json_scalars if how == 2 else st.nothing()), max_size=6))
    return orjson.dumps(items)


def run_batch(impl, query, body, h, max_events):
    ids = impl.TimeUUIDGen(node=0x010203040506, clock_seq=7, frozen_ns=1_700_000_000_000_000_000)
    try:
        records = impl.encode_batch(b"/tr/v1/batch", query, body, h["ip"], h["user_agent"],
                                    h["accept_language"], h["cookie_vid"], h["now_ms"], ids,
                                    url_filter(h["url_prefix_filter"]), max_events=max_events)
    except ParseError as exc:
        return (type(exc).__name__, str(exc), ids.new())
    return ("ok", records, ids.new())


@settings(max_examples=300, **SETTINGS)
@given(query=query_strings(), body=batch_bodies(), h=headers,
       max_events=st.sampled_from([1000, 3]))
def test_batch_equivalence(query, body, h, max_events):
    compiled = run_batch(_parse, query, body, h, max_events)
    reference = run_batch(parse_ref, query, body, h, max_events)
    assert compiled == reference
    if compiled[0] == "ok":
        events = [_parse.decode(r) for r in compiled[1]]
        assert len({e["eid"] for e in events}) == len(events)       # each its own eid
        new = [e for e in events if e.get("new_visitor")]
        assert len(new) <= 1                                         # one visitor minted at most
