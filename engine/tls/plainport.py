"""The plain-HTTP port when the node serves TLS (``"TLS": "local" | "acme"``).

Every worker listens on ``ProxyPort`` next to ``ProxyPortTLS`` and answers
there with this app instead of the tracker routes:

- ``/.well-known/acme-challenge/<token>``: the key authorization of a
  pending ACME HTTP-01 challenge. The ACME process writes one file per token
  into the cache directory, so whichever worker the kernel hands the CA's
  connection to can answer it.
- anything else: a permanent redirect to the same path and query on the
  HTTPS port (301 for GET/HEAD; 308 for other methods, so a POST stays a
  POST with its body).

It speaks to ``engine.http.protocol.HttpConnection`` through the same few
methods as ``TrackerApp`` and borrows that app's connection accounting, so
``MaximumConnections`` counts both ports.
"""
import os
import re
from time import perf_counter

from engine.http import responses

CHALLENGE_PREFIX = b"/.well-known/acme-challenge/"
CHALLENGE_DIR = "challenges"
TOKEN = re.compile(rb"[A-Za-z0-9_-]{1,256}")        # base64url, RFC 8555 §8.3
HOST_NAME = re.compile(r"[A-Za-z0-9._-]{1,253}")
STATUS = {200: b"HTTP/1.1 200 OK\r\n", 301: b"HTTP/1.1 301 Moved Permanently\r\n",
          308: b"HTTP/1.1 308 Permanent Redirect\r\n", 400: b"HTTP/1.1 400 Bad Request\r\n",
          404: b"HTTP/1.1 404 Not Found\r\n"}


def split_host(value):
    """``Host`` header → (host for a URL, port or None); None when invalid.

    Accepts ``name``, ``name:port``, ``1.2.3.4:port`` and IPv6 literals
    ``[::1]`` / ``[::1]:port``; the host comes back in URL form (IPv6 with
    brackets, names lower-cased).
    """
    value = value.strip()
    if value.startswith("["):
        literal, sep, rest = value[1:].partition("]")
        if not sep or not literal or not all(c in "0123456789abcdefABCDEF:." for c in literal):
            return None
        host, port = "[" + literal.lower() + "]", rest[1:] if rest.startswith(":") else None
        if rest and port is None:
            return None
    else:
        host, sep, port = value.partition(":")
        port = port if sep else None
        if not HOST_NAME.fullmatch(host):
            return None
        host = host.lower()
    if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
        return None
    return host, port


def split_target(target):
    """A request target → (authority or None, path and query).

    Absolute-form (``http://host:80/p?q``) carries its own authority, which
    RFC 9112 §3.2.2 says wins over ``Host``; ``*`` and anything odd map to
    the site root."""
    if target.startswith("/"):
        return None, target
    if target.lower().startswith(("http://", "https://")):
        after = target.split("//", 1)[1]
        cut = min([i for i in (after.find("/"), after.find("?")) if i >= 0] + [len(after)])
        rest = after[cut:]
        return after[:cut] or None, rest if rest.startswith("/") else "/" + rest
    return None, "/"


def escape_target(raw):
    """A raw request target as ASCII text fit for a Location header: bytes
    outside printable ASCII are percent-encoded, the rest kept as sent."""
    return "".join(chr(b) if 32 < b < 127 else "%%%02X" % b for b in raw)


def https_location(host_header, target, tls_port, fallback_host=None):
    """The HTTPS URL a plain request is sent to, or None without a usable host.

    The host keeps its name (any port the client used is the plain port, so
    it is dropped) and gets the TLS port unless that is 443.
    """
    authority, path = split_target(target)
    host = authority or host_header
    parsed = split_host(host) if host else None
    if parsed is None:
        if not fallback_host or host:
            return None
        parsed = (fallback_host, None)
    netloc = parsed[0] if tls_port == 443 else "%s:%d" % (parsed[0], tls_port)
    return "https://" + netloc + path


def fallback_host(config):
    """The host to redirect to when a request has no usable ``Host``."""
    if config.domains:
        return config.domains[0]
    host = config.listen_tls[0]
    if host in ("0.0.0.0", "::", ""):
        return None
    return "[%s]" % host if ":" in host else host


def _response(status, date, headers=b"", body=b"", close=False):
    return b"%s%s%sContent-Length: %d\r\n%s%s\r\n%s" % (
        STATUS[status], date.value, responses.SERVER, len(body), headers,
        responses.CLOSE if close else b"", body)


class PlainPortApp:
    """Answers on the plain port: ACME challenges, else redirect to HTTPS."""

    def __init__(self, config, tracker_app):
        self.app = tracker_app          # connection accounting, errors, stats
        self.date = tracker_app.date
        self.stats = tracker_app.stats
        self.tls_port = config.listen_tls[1]
        self.fallback = fallback_host(config)
        self.challenges = (os.path.join(config.acme_cache_directory, CHALLENGE_DIR)
                           if config.tls == "acme" else None)
        self.fast = None                # no compiled routes on the plain port

    # ---- what HttpConnection calls --------------------------------------
    def admit_connection(self, conn):
        return self.app.admit_connection(conn)

    def connection_closed(self, conn):
        self.app.connection_closed(conn)

    def error_response(self, status, text):
        return self.app.error_response(status, text)

    def unavailable_response(self):
        return self.app.unavailable_response()

    def count_error(self, status):
        self.app.count_error(status)

    def internal_error(self, conn, exc):
        self.app.internal_error(conn, exc)

    def route_head(self, conn, req):
        return None     # nothing here is streamed: answered once the message is complete

    def handle(self, conn, req, keep):
        started = perf_counter()
        url = req.url
        if self.challenges is not None and url.startswith(CHALLENGE_PREFIX):
            name, (status, response) = "acme", self.challenge(url[len(CHALLENGE_PREFIX):], keep)
            if req.method == b"HEAD":
                response = response[:response.index(b"\r\n\r\n") + 4]
        else:
            name, (status, response) = "https_redirect", self.redirect(req, keep)
        self.stats.answered(name, status, perf_counter() - started)
        return response

    # ---- answers -----------------------------------------------------------
    def challenge(self, token, keep):
        if not TOKEN.fullmatch(token):
            return 404, _response(404, self.date, body=b"not found\n", close=not keep)
        try:
            with open(os.path.join(self.challenges, token.decode()), "rb") as fh:
                body = fh.read()
        except OSError:
            return 404, _response(404, self.date, body=b"not found\n", close=not keep)
        return 200, _response(200, self.date, b"Content-Type: text/plain\r\n" + responses.NO_STORE,
                              body, close=not keep)

    def redirect(self, req, keep):
        location = https_location(req.header(b"host"), escape_target(req.url),
                                  self.tls_port, self.fallback)
        if location is None:
            return 400, _response(400, self.date, body=b"a valid Host header is needed\n",
                                  close=not keep)
        status = 301 if req.method in (b"GET", b"HEAD") else 308
        headers = b"Location: " + location.encode() + b"\r\n"
        return status, _response(status, self.date, headers, close=not keep)
