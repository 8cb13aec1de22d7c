"""Request and response heads as the reverse proxy rewrites them (pure functions).

Hop-by-hop headers (RFC 9110 §7.6.1: ``Connection`` and every header it
names, ``Keep-Alive``, ``Proxy-*``, ``TE``, ``Trailer``, ``Transfer-Encoding``,
``Upgrade``) describe one connection, so they are dropped on both sides and
the proxy frames each side itself. ``Upgrade`` survives only on a WebSocket
(or other) upgrade, where it is the point of the request.
"""
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"proxy-authenticate",
                        b"proxy-authorization", b"te", b"trailer", b"trailers",
                        b"transfer-encoding", b"upgrade"})
# Set by the proxy itself; a client's own values would be spoofable.
REPLACED = frozenset({b"host", b"content-length", b"expect", b"x-forwarded-for",
                      b"x-forwarded-host", b"x-forwarded-proto", b"x-origin-host"})

NO_BODY, LENGTH, CHUNKED = 0, 1, 2


def connection_tokens(value):
    """Header names listed in a Connection header value (lower-cased bytes)."""
    if not value:
        return frozenset()
    return frozenset(t.strip().lower() for t in value.split(b",") if t.strip())


def request_framing(headers):
    """How the client framed its body: (NO_BODY | LENGTH | CHUNKED, length)."""
    te = headers.get(b"transfer-encoding")
    if te is not None and te.lower().rstrip().endswith(b"chunked"):
        return CHUNKED, 0
    length = headers.get(b"content-length")
    if length is not None and length.strip().isdigit():
        return LENGTH, int(length)
    return NO_BODY, 0


def forwarded_for(headers, peer, peer_trusted):
    """X-Forwarded-For for the upstream: the chain a trusted proxy sent us with
    our peer appended; from anyone else only the peer (a client cannot plant
    addresses the upstream would believe)."""
    chain = headers.get(b"x-forwarded-for")
    if peer_trusted and chain:
        return chain + b", " + peer.encode()
    return peer.encode()


def request_head(method, target, headers, upstream_host, peer, peer_trusted, tls,
                 framing, upgrade):
    """The request head sent upstream.

    ``headers``: the client's (lower-cased names, repeats joined); ``target``:
    path and query to ask for; ``framing``: (kind, length) from
    ``request_framing``; ``upgrade``: the Upgrade value to pass on, or None."""
    drop = HOP_BY_HOP | REPLACED | connection_tokens(headers.get(b"connection"))
    out = [b"%s %s HTTP/1.1\r\nHost: %s\r\n" % (method, target, upstream_host)]
    for name, value in headers.items():
        if name not in drop:
            out.append(b"%s: %s\r\n" % (name, value))
    host = headers.get(b"host")
    out.append(b"X-Forwarded-For: %s\r\n" % forwarded_for(headers, peer, peer_trusted))
    if host:
        out.append(b"X-Forwarded-Host: %s\r\n" % host)
    out.append(b"X-Forwarded-Proto: %s\r\n" % (b"https" if tls else b"http"))
    out.append(b"X-Origin-Host: %s\r\n" % upstream_host)
    kind, length = framing
    if kind == LENGTH:
        out.append(b"Content-Length: %d\r\n" % length)
    elif kind == CHUNKED:
        out.append(b"Transfer-Encoding: chunked\r\n")
    if upgrade is not None:
        out.append(b"Connection: upgrade\r\nUpgrade: %s\r\n" % upgrade)
    out.append(b"\r\n")
    return b"".join(out)


def response_head(status, reason, headers, framing, cookie, hsts, close):
    """The response head sent to the client.

    ``headers``: the upstream's, as a list of (name, value) with their case and
    repeats (Set-Cookie must not be joined); ``framing``: (kind, length) the
    proxy uses towards the client; ``cookie``: a Set-Cookie line the collector
    adds (or b""); ``hsts``: a Strict-Transport-Security value to add when the
    upstream sent none (or b"")."""
    upgrade = status == 101
    drop = HOP_BY_HOP | {b"content-length"}
    for name, value in headers:
        if name.lower() == b"connection":
            drop = drop | connection_tokens(value)
    out = [b"HTTP/1.1 %d %s\r\n" % (status, reason or b"Unknown")]
    for name, value in headers:
        low = name.lower()
        if low not in drop or (upgrade and low == b"upgrade"):
            out.append(b"%s: %s\r\n" % (name, value))
        if low == b"strict-transport-security":
            hsts = b""
    kind, length = framing
    if kind == LENGTH:
        out.append(b"Content-Length: %d\r\n" % length)
    elif kind == CHUNKED:
        out.append(b"Transfer-Encoding: chunked\r\n")
    out.append(cookie)
    if hsts:
        out.append(b"Strict-Transport-Security: %s\r\n" % hsts)
    if upgrade:
        out.append(b"Connection: upgrade\r\n")
    elif close:
        out.append(b"Connection: close\r\n")
    out.append(b"\r\n")
    return b"".join(out)


def chunk(data):
    """One chunk of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
