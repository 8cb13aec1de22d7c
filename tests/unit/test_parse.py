"""Examples for parse_track, run against both the compiled and the reference parser."""

import math

import pytest

from engine import _parse, parse_ref
from engine.errors import ParseError
from engine.urlfilter import url_filter
from engine.zones import ZONES

IMPLEMENTATIONS = [pytest.param(_parse, id="cython"), pytest.param(parse_ref, id="reference")]

VID = "3d0be300-cbd2-11e8-aa59-ffd128a54d91"
SID = "3d0be301-cbd2-11e8-aa59-ffd128a54d91"
NOW = 1_700_000_000_123
IP = "203.0.113.9"

DESIGN_BODY = (
    b'{"last":"https://localhost:5001/cw.html","next":"https://localhost:5001/cw.html",'
    b'"params":{"type":"a","ref":"Bespoke"},"created":1539102052702,"duration":34752,'
    b'"vid":"3d0be300-cbd2-11e8-aa59-ffd128a54d91","first":"false",'
    b'"sid":"3d0be301-cbd2-11e8-aa59-ffd128a54d91","tz":"America/Los_Angeles",'
    b'"device":"Linux","os":"Linux","sink":"cw$","score":1,"eid":"cw-a","uid":"admin"}'
)


class Counter:
    """Deterministic ids: 00000000-0000-1000-8000-00000000000N."""

    def __init__(self):
        self.n = 0

    def new(self):
        self.n += 1
        return "00000000-0000-1000-8000-%012x" % self.n


def ident(n):
    return "00000000-0000-1000-8000-%012x" % n


def track(impl, path=b"/tr/v1", query=None, body=None, *, ip=IP, ua=None,
          lang=None, cookie=None, prefix="", ids=None):
    return impl.parse_track(path, query, body, ip, ua, lang, cookie, NOW,
                            ids or Counter(), url_filter(prefix))


def fnv1a32_base36(text):
    """Independent little FNV-1a 32 + base 36 for the expected bhash."""
    h = 0x811C9DC5
    for byte in text.encode("utf-8", "replace"):
        h = ((h ^ byte) * 0x01000193) % 2**32
    digits = ""
    while True:
        h, r = divmod(h, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[r] + digits
        if h == 0:
            return digits


pytestmark = pytest.mark.parametrize("impl", IMPLEMENTATIONS)


# ---------------------------------------------------------------- DESIGN.md

def test_design_get_example(impl):
    path = ("/tr/v1/vid/%s/ROCK/ON/lat/37.232332/lon/6.32233223/first/true"
            "/score/6/ref/andy" % VID).encode()
    event = track(impl, path)
    assert event == {
        "eid": ident(1),
        "vid": VID,
        "sid": ident(2),          # known visitor, no sid sent -> minted
        "created": NOW,
        "first": True,
        "ip": IP,
        "latlon": [37.232332, 6.32233223],
        "score": 6.0,
        "ref": "andy",
        "params": {"ROCK": "ON"},
    }
    assert type(event["score"]) is float
    assert all(type(x) is float for x in event["latlon"])


def test_design_post_body(impl):
    event = track(impl, b"/tr/v1/", body=DESIGN_BODY)
    assert event == {
        "eid": ident(1),
        "vid": VID,
        "sid": SID,
        "created": NOW,
        "first": False,
        "ip": IP,
        "last": "https://localhost:5001/cw.html",
        "duration": 34752,
        "tz": "America/Los_Angeles",
        "country": "US",
        "device": "Linux",
        "os": "Linux",
        "sink": "cw$",
        "score": 1.0,
        "uid": "admin",
        "params": {
            "type": "a",
            "ref": "Bespoke",
            "next": "https://localhost:5001/cw.html",
            "created": "1539102052702",
            "eid": "cw-a",
        },
    }
    assert type(event["duration"]) is int
    assert type(event["score"]) is float
    assert "new_visitor" not in event


def test_post_ignores_path_tuplets(impl):
    event = track(impl, b"/tr/v1/ref/andy", body=b'{"uid":"u"}')
    assert "ref" not in event and event["uid"] == "u"
    assert event["params"] == {}


# ---------------------------------------------------------------- identity

def test_new_visitor_gets_minted_ids(impl):
    event = track(impl, b"/tr/v1")
    assert event["eid"] == ident(1)
    assert event["vid"] == ident(2)
    assert event["sid"] == ident(2)     # new visitor: sid = vid
    assert event["first"] is True
    assert event["new_visitor"] is True
    assert event["params"] == {}


def test_cookie_vid_is_used(impl):
    event = track(impl, b"/tr/v1", cookie=VID.upper())
    assert event["vid"] == VID
    assert event["sid"] == ident(2)
    assert event["first"] is True       # no "first" sent: first (Go's rule)
    assert "new_visitor" not in event


def test_request_vid_beats_cookie(impl):
    event = track(impl, b"/tr/v1/vid/" + SID.encode(), cookie=VID)
    assert event["vid"] == SID


def test_invalid_cookie_vid_means_new_visitor(impl):
    event = track(impl, b"/tr/v1", cookie="not-a-uuid")
    assert event["vid"] == ident(2) and event["new_visitor"] is True
    assert "vid" not in event["params"]


@pytest.mark.parametrize("raw,expected", [
    ("3D0BE300-CBD2-11E8-AA59-FFD128A54D91", VID),
    ("3d0be300cbd211e8aa59ffd128a54d91", VID),
    ("3D0BE300CBD211E8AA59FFD128A54D91", VID),
])
def test_uuid_forms_are_normalised(impl, raw, expected):
    event = track(impl, b"/tr/v1/vid/" + raw.encode() + b"/sid/" + raw.encode())
    assert event["vid"] == expected and event["sid"] == expected
    assert event["params"] == {}


@pytest.mark.parametrize("raw", [
    "00000000-0000-0000-0000-000000000000",      # nil
    "00000000000000000000000000000000",
    "3d0be300-cbd2-11e8-aa59-ffd128a54d9",        # short
    "3d0be300-cbd2-11e8-aa59-ffd128a54d91a",      # long
    "3d0be300cbd2-11e8-aa59-ffd128a54d91-",       # hyphens misplaced
    "{3d0be300-cbd2-11e8-aa59-ffd128a54d91}",
    "3d0be300-cbd2-11e8-aa59-ffd128a54g91",       # not hex
    "3d0be300-cbd2-11e8-aa59-ffd128a54d9\u0661",  # non-ASCII digit
    "cw-a",
    "",
])
def test_invalid_uuids_go_to_params(impl, raw):
    query = "vid=%s&sid=%s" % (raw, raw)
    event = track(impl, b"/tr/v1", query.encode())
    assert event["vid"] == ident(2) and event["new_visitor"] is True
    assert event["sid"] == ident(2)
    assert event["params"] == {"vid": raw, "sid": raw}


def test_non_string_vid_in_body_goes_to_params(impl):
    event = track(impl, body=b'{"vid": 12, "sid": {"a": 1}}')
    assert event["params"] == {"vid": "12", "sid": '{"a":1}'}
    assert event["new_visitor"] is True


def test_client_eid_and_created_are_kept_in_params(impl):
    event = track(impl, body=('{"eid": "%s", "created": 5}' % VID).encode())
    assert event["eid"] == ident(1)
    assert event["created"] == NOW
    assert event["params"] == {"eid": VID, "created": "5"}


@pytest.mark.parametrize("value,first", [
    ('"false"', False), ("false", False), ('"true"', True), ("true", True),
    ('"FALSE"', True), ('""', True), ("0", True), ("null", True),
])
def test_first_flag(impl, value, first):
    event = track(impl, body=('{"vid": "%s", "first": %s}' % (VID, value)).encode())
    assert event["first"] is first
    assert "first" not in event["params"]


def test_new_visitor_is_always_first(impl):
    assert track(impl, b"/tr/v1/first/false")["first"] is True


def test_missing_first_is_first(impl):
    # Go: first := isNew || v["first"] != "false" -- no "first" at all is first.
    path = ("/tr/v1/vid/%s/sid/%s/ename/open" % (VID, SID)).encode()
    event = track(impl, path, cookie=VID)
    assert event["first"] is True and "new_visitor" not in event
    assert track(impl, body=('{"vid": "%s"}' % VID).encode())["first"] is True
    assert track(impl, path + b"/first/false")["first"] is False


def test_repeated_query_key_keeps_first_value(impl):
    event = track(impl, b"/tr/v1/ename/path", b"ename=a&ename=b&x=1&x=2")
    assert event["ename"] == "a"                 # query beats the path, first query wins
    assert event["params"] == {"x": "1"}
    event = track(impl, b"/tr/v1", b"ename=a&ename=b", body=b'{"ename": "c"}')
    assert event["ename"] == "c"                 # the body still beats the query


# ---------------------------------------------------------------- GET decoding

def test_percent_encoding_in_path(impl):
    event = track(impl, b"/tr/v1/url/https%3A%2F%2Fex.com%2Fa%20b/k%2Bey/a+b%25")
    assert event["url"] == "https://ex.com/a b"
    assert event["params"] == {"k+ey": "a+b%"}


@pytest.mark.parametrize("path", [b"/tr/v1/k/a%zz", b"/tr/v1/k/%4", b"/tr/v1/%g0/v",
                                  b"/tr/v1/k/v/%"])
def test_malformed_escape_in_path_is_a_parse_error(impl, path):
    with pytest.raises(ParseError, match="malformed percent-encoding in the path"):
        track(impl, path)


def test_malformed_escape_in_query_is_kept(impl):
    assert track(impl, b"/tr/v1", b"k=a%zz%4")["params"] == {"k": "a%zz%4"}


def test_query_is_form_decoded(impl):
    event = track(impl, b"/tr/v1", b"a=x+y%2By&&b&c=1=2&=skip&%C3%A9=%E2%82%AC")
    assert event["params"] == {"a": "x y+y", "b": "", "c": "1=2", "é": "€"}


def test_query_overwrites_path_and_earlier_duplicate_wins(impl):
    event = track(impl, b"/tr/v1/ref/path/k/1", b"ref=query&k=2&k=3")
    assert event["ref"] == "query"
    assert event["params"] == {"k": "2"}


def test_path_edge_cases(impl):
    # empty key skipped, trailing key gets "", trailing slash after the route fine
    assert track(impl, b"/tr/v1/tr/")["params"] == {"tr": ""}
    assert track(impl, b"/tr/v1//x/ref")["ref"] == ""
    assert track(impl, b"/tr/v1//x/ref")["params"] == {}
    assert track(impl, b"")["params"] == {}
    assert track(impl, b"/")["params"] == {}
    assert track(impl, b"/tr")["params"] == {}


def test_non_utf8_bytes_are_replaced(impl):
    event = track(impl, b"/tr/v1/ref/\xff\xfeok/k%FF/v", b"q=%C3%28&\xe9=1")
    assert event["ref"] == "\ufffd\ufffdok"
    assert event["params"] == {"k\ufffd": "v", "q": "\ufffd(", "\ufffd": "1"}


def test_get_numbers_from_strings(impl):
    event = track(impl, b"/tr/v1/duration/12.9/score/-1.5e2/w/1024/h/768")
    assert event["duration"] == 12 and type(event["duration"]) is int
    assert event["score"] == -150.0
    assert event["vp"] == [1024, 768]
    assert event["params"] == {}


@pytest.mark.parametrize("raw", ["abc", "1_000", " 5", "nan", "inf", "1e", "0x10", "", "\u0661"])
def test_bad_numbers_go_to_params(impl, raw):
    query = "duration=%s&score=%s" % (raw, raw)
    event = track(impl, b"/tr/v1", query.encode("utf-8"))
    assert "duration" not in event and "score" not in event
    assert event["params"] == {"duration": raw, "score": raw}


def test_duration_outside_int64_goes_to_params(impl):
    event = track(impl, body=b'{"duration": 18446744073709551615}')
    assert event["params"] == {"duration": "18446744073709551615"}
    event = track(impl, b"/tr/v1/duration/-9223372036854775808")
    assert event["duration"] == -(2**63)
    event = track(impl, b"/tr/v1/duration/9223372036854775808")
    assert event["params"] == {"duration": "9223372036854775808"}


def test_duration_and_score_types_from_json(impl):
    event = track(impl, body=b'{"duration": -3.99, "score": "2"}')
    assert event["duration"] == -3 and event["score"] == 2.0
    event = track(impl, body=b'{"duration": true, "score": false}')
    assert event["params"] == {"duration": "true", "score": "false"}


# ---------------------------------------------------------------- latlon / vp

def test_latlon_from_numbers(impl):
    event = track(impl, body=b'{"lat": 37, "lon": "-122.5"}')
    assert event["latlon"] == [37.0, -122.5]
    assert all(type(x) is float for x in event["latlon"])


@pytest.mark.parametrize("lat,lon", [
    ("90.1", "0"), ("-91", "0"), ("0", "180.5"), ("0", "-181"), ("x", "1"),
])
def test_latlon_out_of_range_goes_to_params(impl, lat, lon):
    event = track(impl, ("/tr/v1/lat/%s/lon/%s" % (lat, lon)).encode())
    assert "latlon" not in event
    assert event["params"] == {"lat": lat, "lon": lon}


def test_latlon_bounds_are_inclusive(impl):
    assert track(impl, b"/tr/v1/lat/-90/lon/180")["latlon"] == [-90.0, 180.0]


def test_lat_without_lon(impl):
    event = track(impl, body=b'{"lat": 1.5}')
    assert "latlon" not in event and event["params"] == {"lat": "1.5"}


def test_vp(impl):
    assert track(impl, body=b'{"w": 1920.0, "h": 0}')["vp"] == [1920, 0]
    assert track(impl, body=b'{"w": "1920", "h": 1080}')["vp"] == [1920, 1080]
    for body, params in [
        (b'{"w": -1, "h": 10}', {"w": "-1", "h": "10"}),
        (b'{"w": 1.5, "h": 10}', {"w": "1.5", "h": "10"}),
        (b'{"w": "+5", "h": 10}', {"w": "+5", "h": "10"}),
        (b'{"w": "5.0", "h": 10}', {"w": "5.0", "h": "10"}),
        (b'{"w": true, "h": 10}', {"w": "true", "h": "10"}),
        (b'{"w": 10}', {"w": "10"}),
    ]:
        event = track(impl, body=body)
        assert "vp" not in event
        assert event["params"] == params


# ---------------------------------------------------------------- columns

def test_text_columns_and_stringification(impl):
    body = (b'{"uid": 7, "app": true, "ptype": 1.5, "targets": ["a", 1], '
            b'"etyp": {"k": null}, "version": "2.1", "username": "bob", "os": null}')
    event = track(impl, body=body)
    assert event["uid"] == "7"
    assert event["app"] == "true"
    assert event["ptype"] == "1.5"
    assert event["targets"] == '["a",1]'
    assert event["etyp"] == '{"k":null}'
    assert event["ver"] == "2.1" and "version" not in event
    assert event["username"] == "bob"
    assert "os" not in event and event["params"] == {}


def test_url_prefix_filter_without_group_strips_the_start(impl):
    event = track(impl, b"/tr/v1", b"url=https://ex.com/a/b?q=1", prefix="https://ex\\.com")
    assert event["url"] == "/a/b?q=1"
    event = track(impl, b"/tr/v1", b"url=http://other/https://ex.com", prefix="https://ex\\.com")
    assert event["url"] == "http://other/https://ex.com"
    assert track(impl, b"/tr/v1", b"url=x")["url"] == "x"


GO_FILTER = r"http(s|)://(localhost|dev\.sfproductlabs\.com)(:[0-9]*|)(/.*)"


def test_url_prefix_filter_go_rule_last_group_cut_at_query(impl):
    query = (b"url=https%3A%2F%2Flocalhost%3A5001%2Fcw.html%3Fx%3D1"
             b"&last=http%3A%2F%2Fdev.sfproductlabs.com%2Fa%2Fb")
    event = track(impl, b"/tr/v1", query, prefix=GO_FILTER)
    assert event["url"] == "/cw.html"
    assert event["last"] == "/a/b"
    event = track(impl, body=b'{"url": "https://other.com/x?y=1", "last": "nope"}',
                  prefix=GO_FILTER)
    assert event["url"] == "https://other.com/x?y=1" and event["last"] == "nope"


def test_server_derived_names_from_client_go_to_params(impl):
    body = (b'{"ip": "1.1.1.1", "browser": "b", "bhash": "h", "country": "FR", '
            b'"culture": "fr", "ver": "9", "vp": [1, 2], "latlon": [1, 2], '
            b'"new_visitor": false}')
    event = track(impl, body=body, cookie=VID)
    assert event["ip"] == IP
    for name in ("browser", "bhash", "country", "culture", "ver", "vp", "latlon", "new_visitor"):
        assert name not in event
    assert event["params"] == {
        "ip": "1.1.1.1", "browser": "b", "bhash": "h", "country": "FR",
        "culture": "fr", "ver": "9", "vp": "[1,2]", "latlon": "[1,2]",
        "new_visitor": "false",
    }


def test_params_object_and_top_level_unknowns(impl):
    body = b'{"params": {"a": 1, "b": null, "c": [true], "k": "inner"}, "k": "outer", "x": 2.5}'
    event = track(impl, body=body)
    assert event["params"] == {"a": "1", "c": "[true]", "k": "outer", "x": "2.5"}


def test_non_object_params_value(impl):
    assert track(impl, body=b'{"params": [1]}')["params"] == {"params": "[1]"}
    assert track(impl, b"/tr/v1/params/x")["params"] == {"params": "x"}
    assert track(impl, body=b'{"params": null}')["params"] == {}


def test_utm_query(impl):
    query = (b"utm_source=news&utm_medium=email&utm_campaign=spring"
             b"&utm_term=shoes&utm_content=hero")
    event = track(impl, b"/tr/v1", query)
    assert event["source"] == "news"
    assert event["medium"] == "email"
    assert event["campaign"] == "spring"
    assert event["term"] == "shoes"
    assert event["params"] == {"content": "hero"}


def test_explicit_keys_win_over_utm(impl):
    query = b"utm_source=news&source=direct&utm_content=hero&content=own&utm_medium=m"
    event = track(impl, b"/tr/v1", query)
    assert event["source"] == "direct"
    assert event["medium"] == "m"
    assert event["params"] == {"content": "own"}


def test_utm_in_post_with_query(impl):
    event = track(impl, b"/tr/v1", b"utm_source=q&utm_term=t", body=b'{"source": null, "term": "b"}')
    assert event["source"] == "q"      # null source is absent
    assert event["term"] == "b"
    assert event["params"] == {}


def test_body_overwrites_query_in_post(impl):
    event = track(impl, b"/tr/v1", b"ref=q&k=q", body=b'{"ref": "b", "k": null}')
    assert event["ref"] == "b"
    assert event["params"] == {}      # null k removes the query k too


# ---------------------------------------------------------------- server-derived

def test_bhash_of_known_user_agent(impl):
    ua = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"
    event = track(impl, ua=ua)
    assert event["browser"] == ua
    assert event["bhash"] == fnv1a32_base36(ua)


def test_bhash_edge_cases(impl):
    assert track(impl, ua="")["bhash"] == fnv1a32_base36("")
    assert track(impl, ua="a")["bhash"] == "1r9wi7g"         # 0xe40c292c
    assert track(impl, ua="Zürich \udcff")["bhash"] == fnv1a32_base36("Zürich \udcff")
    assert "bhash" not in track(impl) and "browser" not in track(impl)


@pytest.mark.parametrize("header,culture", [
    ("en-US,en;q=0.9", "en-US"),
    ("fr-CH;q=0.9, fr", "fr-CH"),
    ("  de  ", "de"),
    ("*", "*"),
    ("", None),
    (";q=1,en", None),
    (" ,en", None),
])
def test_culture(impl, header, culture):
    event = track(impl, lang=header)
    assert event.get("culture") == culture


@pytest.mark.parametrize("tz,country", [
    ("America/Los_Angeles", "US"),
    ("Europe/Zurich", "CH"),
    ("Asia/Tokyo", "JP"),
    ("US/Pacific", None),      # a link, not in zone1970
    ("Nowhere/Else", None),
])
def test_country_from_tz(impl, tz, country):
    event = track(impl, b"/tr/v1/tz/" + tz.replace("/", "%2F").encode())
    assert event["tz"] == tz
    assert event.get("country") == country


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("body", [b"", b"{", b"{'a': 1}", b"NaN", b'{"a": 1e400}',
                                  b"\xff", b'{"a": "\\ud800"}', b"[" * 2000])
def test_malformed_json(impl, body):
    with pytest.raises(ParseError) as info:
        track(impl, body=body)
    message = str(info.value)
    assert message.startswith("malformed JSON: ")
    assert len(message) <= len("malformed JSON: ") + 80


@pytest.mark.parametrize("body", [b"[]", b"[1, 2]", b'"x"', b"1", b"null", b"true"])
def test_non_object_json(impl, body):
    with pytest.raises(ParseError, match="^JSON body must be an object$"):
        track(impl, body=body)


def test_too_deep_value_is_a_parse_error(impl):
    body = b'{"x": ' + b"[" * 300 + b"]" * 300 + b"}"
    with pytest.raises(ParseError):
        track(impl, body=body)


def test_parse_error_is_raised_before_any_id_is_minted(impl):
    ids = Counter()
    with pytest.raises(ParseError):
        track(impl, body=b"{", ids=ids)
    assert ids.n == 0


def test_zones_table(impl):
    assert impl.ZONES is ZONES      # both parsers share the one table
    assert ZONES["America/Los_Angeles"] == "US"
    assert ZONES["Europe/Zurich"] == "CH"
    assert len(ZONES) > 250
    assert all(len(code) == 2 and code.isupper() for code in ZONES.values())


def test_output_is_json_friendly(impl):
    event = track(impl, body=DESIGN_BODY, ua="x", lang="en")
    for key, value in event.items():
        assert value is not None, key
    assert not any(isinstance(v, float) and math.isnan(v) for v in event.values())
