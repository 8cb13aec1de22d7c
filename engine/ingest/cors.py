"""CORS for the tracking routes: what a real browser accepts.

A browser's JSON POST is preflighted, so ``Content-Type`` must be an allowed
header; with credentials (the ``vid`` cookie) the allowed origin must echo
the request's ``Origin``: browsers refuse ``*`` on credentialed requests.
"""
from engine.http import responses

PREFLIGHT_METHODS = b"Access-Control-Allow-Methods: GET, POST, OPTIONS\r\n"


def header_safe(value):
    """Printable ASCII and not too long: safe to echo in a header."""
    return value is not None and len(value) < 2048 and all(32 <= c < 127 for c in value)


def cors_headers(req):
    origin = req.headers.get(b"origin")
    if not header_safe(origin) or origin == b"null":
        return b""
    return (b"Access-Control-Allow-Origin: " + origin +
            b"\r\nAccess-Control-Allow-Credentials: true\r\nVary: Origin\r\n")


def preflight(req, date, keep):
    """The answer to an OPTIONS preflight on a tracking route."""
    asked = req.headers.get(b"access-control-request-headers")
    allow = asked if header_safe(asked) else b"Content-Type"
    headers = (cors_headers(req) + PREFLIGHT_METHODS +
               b"Access-Control-Allow-Headers: " + allow + b"\r\n"
               b"Access-Control-Max-Age: 86400\r\n")
    if b"Vary" not in headers:
        headers += b"Vary: Origin\r\n"
    return responses.build(200, date, headers, content_type=None, close=not keep)
