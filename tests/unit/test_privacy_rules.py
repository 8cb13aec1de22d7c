"""engine/ingest/privacy.py: the per-request decision and the anonymisers."""
import re
import uuid
from types import SimpleNamespace

import pytest

from engine.ingest import privacy
from engine.ingest.privacy import Privacy, truncate

SECRET = b"s" * 32


def config(ip="off", dnt="ignore", consent=""):
    return SimpleNamespace(ip_anonymize=ip, do_not_track=dnt, consent_cookie=consent,
                           domains=["example.com"])


@pytest.mark.parametrize("ip,expected", [
    ("203.0.113.77", "203.0.113.0"), ("10.1.2.3", "10.1.2.0"),
    ("2001:db8:abcd:12::1", "2001:db8:abcd::"), ("::ffff:198.51.100.9", "198.51.100.0"),
    ("fe80::1%eth0", "fe80::"), ("not an address", ""), ("", ""),
])
def test_truncate(ip, expected):
    assert truncate(ip) == expected


def test_active_only_when_a_mode_is_on():
    assert not privacy.active(config())
    assert privacy.active(config(ip="hash"))
    assert privacy.active(config(dnt="drop"))
    assert privacy.active(config(consent="ok"))


def test_hash_is_keyed_stable_within_a_day_and_rotates(monkeypatch):
    p, other = Privacy(config(ip="hash"), SECRET), Privacy(config(ip="hash"), b"t" * 32)
    first = p.decide("203.0.113.7", None, None, None, b"ua", None).ip
    assert re.fullmatch(r"h:[0-9a-f]{16}", first)
    assert p.decide("203.0.113.7", None, None, None, b"ua", None).ip == first
    assert p.decide("203.0.113.8", None, None, None, b"ua", None).ip != first
    assert other.decide("203.0.113.7", None, None, None, b"ua", None).ip != first
    monkeypatch.setattr(privacy, "utc_day", lambda: "2099-01-01")
    assert p.decide("203.0.113.7", None, None, None, b"ua", None).ip != first


@pytest.mark.parametrize("dnt,gpc,opted", [
    (b"1", None, True), (None, b"1", True), (b" 1 ", None, True),
    (b"0", None, False), (None, b"0", False), (None, None, False),
])
def test_do_not_track_modes(dnt, gpc, opted):
    drop = Privacy(config(dnt="drop"), SECRET).decide("198.51.100.4", dnt, gpc, None, b"ua", None)
    assert drop.drop is opted and drop.set_cookie is not opted
    anon = Privacy(config(dnt="anonymize"), SECRET).decide("198.51.100.4", dnt, gpc,
                                                            b"vid=x", b"ua", None)
    assert anon.drop is False
    assert anon.ip == ("198.51.100.0" if opted else "198.51.100.4")
    assert (anon.vid is not None) is opted and anon.set_cookie is not opted
    ignore = Privacy(config(), SECRET).decide("198.51.100.4", dnt, gpc, None, b"ua", None)
    assert (ignore.ip, ignore.vid, ignore.set_cookie, ignore.drop) == \
        ("198.51.100.4", None, True, False)


def test_anonymize_uses_the_configured_ip_mode():
    p = Privacy(config(ip="hash", dnt="anonymize"), SECRET)
    assert p.decide("198.51.100.4", b"1", None, None, b"ua", None).ip.startswith("h:")


@pytest.mark.parametrize("cookie,consented", [
    (None, False), (b"vid=abc", False), (b"ok=", False), (b"ok=0", False),
    (b"ok=false", False), (b"ok=No", False), (b"ok=deny", False), (b'ok="denied"', False),
    (b"ok=1", True), (b"a=b; ok=yes; vid=x", True), (b'ok="all"', True),
    (b"okay=1", False), (b"xok=1", False),
])
def test_consent_cookie(cookie, consented):
    decision = Privacy(config(consent="ok"), SECRET).decide("192.0.2.1", None, None, cookie,
                                                            b"ua", None)
    assert decision.set_cookie is consented
    assert (decision.vid is None) is consented
    assert decision.ip == "192.0.2.1"


def test_cookieless_vid_is_a_uuid_per_site_address_agent():
    p = Privacy(config(consent="ok"), SECRET)

    def vid(ip="192.0.2.1", ua=b"A", origin=None):
        return p.decide(ip, None, None, None, ua, origin).vid
    assert uuid.UUID(vid().decode()).version == 4
    assert vid() == vid()
    assert len({vid(), vid(ip="192.0.2.2"), vid(ua=b"B"), vid(origin=b"https://other.example")}) == 4
    assert vid(origin=b"https://example.com") != vid(origin=b"https://shop.example.com")
