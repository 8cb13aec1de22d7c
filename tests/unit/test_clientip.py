from engine.limits.clientip import ClientIP

PROXIES = ClientIP(["10.0.0.0/8", "::1/128"])


def h(**kw):
    return {k.replace("_", "-").encode(): v.encode() for k, v in kw.items()}


def test_untrusted_peer_cannot_spoof():
    assert PROXIES.resolve("203.0.113.9", h(x_forwarded_for="1.2.3.4")) == "203.0.113.9"


def test_trusted_peer_gives_rightmost_untrusted_hop():
    assert PROXIES.resolve("10.0.0.2", h(x_forwarded_for="1.2.3.4, 198.51.100.7")) == "198.51.100.7"
    assert PROXIES.resolve("10.0.0.2", h(x_forwarded_for="6.6.6.6, 198.51.100.7, 10.0.0.5")) \
        == "198.51.100.7"


def test_client_written_garbage_is_ignored():
    assert PROXIES.resolve("10.0.0.2", h(x_forwarded_for="evil, 198.51.100.7")) == "198.51.100.7"
    assert PROXIES.resolve("10.0.0.2", h(x_forwarded_for="10.0.0.3, junk")) == "10.0.0.2"


def test_all_hops_trusted_gives_the_leftmost_trusted():
    assert PROXIES.resolve("10.0.0.2", h(x_forwarded_for="10.9.9.9, 10.0.0.3")) == "10.9.9.9"


def test_rfc7239_forwarded():
    assert PROXIES.resolve("::1", h(forwarded='for=192.0.2.60;proto=http;by=203.0.113.43')) \
        == "192.0.2.60"
    assert PROXIES.resolve("10.1.1.1", h(forwarded='for="[2001:db8:cafe::17]:4711", for=10.2.2.2')) \
        == "2001:db8:cafe::17"
    assert PROXIES.resolve("10.1.1.1", h(forwarded="for=198.51.100.1:8080")) == "198.51.100.1"


def test_no_header_or_no_proxies():
    assert PROXIES.resolve("10.0.0.2", {}) == "10.0.0.2"
    assert ClientIP([]).resolve("10.0.0.2", h(x_forwarded_for="1.1.1.1")) == "10.0.0.2"


def test_ipv4_mapped_peer_is_matched():
    assert PROXIES.resolve("::ffff:10.0.0.2", h(x_forwarded_for="1.2.3.4")) == "1.2.3.4"
