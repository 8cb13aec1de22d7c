"""The plain port's pure pieces: Host parsing and the HTTPS Location."""
import pytest

from engine.tls.plainport import escape_target, https_location, split_host, split_target


@pytest.mark.parametrize("value, expected", [
    ("example.com", ("example.com", None)),
    ("Example.COM:8080", ("example.com", "8080")),
    ("127.0.0.1:80", ("127.0.0.1", "80")),
    ("[::1]", ("[::1]", None)),
    ("[2001:DB8::1]:8080", ("[2001:db8::1]", "8080")),
    ("[::ffff:127.0.0.1]:1", ("[::ffff:127.0.0.1]", "1")),
])
def test_host_forms(value, expected):
    assert split_host(value) == expected


@pytest.mark.parametrize("value", [
    "", "::1", "[::1", "[::1]x", "[::1]:", "[zz::1]", "a b", "host:0", "host:65536",
    "host:12ab", "evil.com/path", "user@host", "host\r\nX: y", "[::1]:80:80",
])
def test_bad_hosts_are_refused(value):
    assert split_host(value) is None


def test_request_targets():
    assert split_target("/a/b?c=1") == (None, "/a/b?c=1")
    assert split_target("http://h:8080/a?b") == ("h:8080", "/a?b")
    assert split_target("HTTP://h?q=1") == ("h", "/?q=1")
    assert split_target("http://h") == ("h", "/")
    assert split_target("*") == (None, "/")


def test_location_keeps_path_and_query_and_swaps_the_port():
    assert https_location("example.com:8080", "/tr/v1/x?a=1", 8443) == \
        "https://example.com:8443/tr/v1/x?a=1"
    assert https_location("example.com", "/", 443) == "https://example.com/"
    assert https_location("[::1]:80", "/p", 443) == "https://[::1]/p"
    assert https_location(None, "/p", 443, "fallback.example") == "https://fallback.example/p"
    assert https_location("bad host", "/p", 443, "fallback.example") is None
    # Absolute-form: the target's authority wins over Host (RFC 9112 §3.2.2).
    assert https_location("other.example", "http://example.com:80/a", 8443) == \
        "https://example.com:8443/a"


def test_targets_are_escaped_for_a_header():
    assert escape_target(b"/caf\xc3\xa9?q=a b") == "/caf%C3%A9?q=a%20b"
    assert escape_target(b"/x\r\nSet-Cookie: a") == "/x%0D%0ASet-Cookie:%20a"
