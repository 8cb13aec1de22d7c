import pytest

from engine.parse_ref import cookie_value
from engine.ingest.redirect import normalise_hosts, safe_redirect

ALLOWED = normalise_hosts(["Example.com", "partner.org."])


@pytest.mark.parametrize("target", [
    "https://example.com/", "http://example.com:8080/x?y=1", "https://a.b.example.com/",
    "https://partner.org/path", "https://EXAMPLE.COM/"])
def test_allowed(target):
    assert safe_redirect(target, ALLOWED, "/d") == target


@pytest.mark.parametrize("target", [
    None, "", "/local", "//example.com/", "https://evil.com/", "https://notexample.com/",
    "https://example.com.evil.com/", "https://example.com@evil.com/", "javascript:alert(1)",
    "https:\\\\evil.com", "https://example.com/\r\nSet-Cookie: x", "ftp://example.com/",
    "https://[::1", "data:text/html,x"])
def test_refused(target):
    assert safe_redirect(target, ALLOWED, "/d") == "/d"


def test_no_allowed_hosts_means_default():
    assert safe_redirect("https://example.com/", (), "/d") == "/d"


def test_cookie_value():
    assert cookie_value(b"a=1; vid=abc; b=2") == b"abc"
    assert cookie_value(b'vid="q"') == b"q"
    assert cookie_value(b"xvid=1; vidx=2") is None
    assert cookie_value(b"") is None
