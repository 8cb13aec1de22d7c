"""Response bytes, precomputed where they can be.

Every response is assembled from constant byte strings plus the cached Date
header; nothing here formats text per request beyond joining pieces.
"""
import time
from email.utils import formatdate

REASONS = {
    100: "Continue", 200: "OK", 204: "No Content", 206: "Partial Content",
    301: "Moved Permanently", 302: "Found", 304: "Not Modified",
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    408: "Request Timeout", 412: "Precondition Failed", 413: "Content Too Large",
    414: "URI Too Long", 416: "Range Not Satisfiable", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 500: "Internal Server Error",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
}
STATUS_LINES = {code: b"HTTP/1.1 %d %s\r\n" % (code, reason.encode())
                for code, reason in REASONS.items()}
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
SERVER = b"Server: tracker\r\n"
CLOSE = b"Connection: close\r\n"
NO_STORE = b"Cache-Control: no-store, max-age=0\r\n"

# The smallest transparent 1x1 GIF (GIF89a, one transparent colour): 43 bytes.
PIXEL_GIF = (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00"
             b"!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00"
             b"\x00\x02\x02D\x01\x00;")


class DateHeader:
    """`Date:` header bytes, refreshed once a second by the worker's ticker."""
    __slots__ = ("value", "second")

    def __init__(self):
        self.second = -1
        self.value = b""
        self.refresh()

    def refresh(self):
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.value = b"Date: %s\r\n" % formatdate(now, usegmt=True).encode()


def build(status, date, headers=b"", body=b"", content_type=b"text/plain; charset=utf-8",
          close=False, head=False):
    """A whole response. ``headers`` is pre-joined header lines."""
    return b"%s%s%s%sContent-Length: %d\r\n%s%s\r\n%s" % (
        STATUS_LINES[status], date.value, SERVER,
        b"Content-Type: " + content_type + b"\r\n" if content_type and body else b"",
        len(body), headers, CLOSE if close else b"", b"" if head else body)


def simple(status, date, text, close=False, extra=b""):
    """A short plain-text answer (errors, ping)."""
    return build(status, date, headers=extra, body=text.encode() if isinstance(text, str) else text,
                 close=close)
