"""Request bodies sent compressed (``Content-Encoding``): gzip, deflate, lz4.

A compressed body is inflated before it is parsed, within two bounds: the
decompressed size stays under ``MaxBodyBytes`` (413 past it), and the
compression ratio under ``MAX_RATIO`` (100): a larger ratio is refused as a
decompression bomb (413) without inflating the rest. "deflate" is the zlib
format of RFC 9110 §8.4.1.2; a raw deflate stream, which some clients send
under that name, is accepted too. "lz4" is the LZ4 frame format (magic
0x184D2204), as the Go collector's browser client sends it.
"""
import zlib

MAX_RATIO = 100


class BodyRefused(Exception):
    """A body that cannot be read: ``status`` (413, 415, 400) and a reason."""

    def __init__(self, status, text):
        super().__init__(text)
        self.status = status
        self.text = text


def inflate(body, encoding, max_bytes):
    """``body`` decoded from ``encoding`` (a Content-Encoding header value)."""
    name = encoding.strip().lower()
    if name in (b"", b"identity"):
        return body
    limit = min(max_bytes, MAX_RATIO * max(len(body), 1))
    if name in (b"gzip", b"x-gzip"):
        return _zlib(body, 16 + zlib.MAX_WBITS, limit, max_bytes)
    if name == b"deflate":
        try:
            return _zlib(body, zlib.MAX_WBITS, limit, max_bytes)
        except BodyRefused as exc:
            if exc.status != 400:
                raise
            return _zlib(body, -zlib.MAX_WBITS, limit, max_bytes)
    if name == b"lz4":
        return _lz4(body, limit, max_bytes)
    raise BodyRefused(415, "unsupported Content-Encoding %s (gzip, deflate or lz4)"
                      % name.decode("latin-1", "replace")[:40])


def _too_big(out, limit, max_bytes):
    if limit < max_bytes:
        return BodyRefused(413, "compression ratio over %d: refused as a bomb" % MAX_RATIO)
    return BodyRefused(413, "body over MaxBodyBytes (%d) once decompressed" % max_bytes)


def _zlib(body, wbits, limit, max_bytes):
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BodyRefused(400, "malformed compressed body: %s" % exc) from None
    if len(out) > limit:
        raise _too_big(out, limit, max_bytes)
    if not inflater.eof:
        raise BodyRefused(400, "malformed compressed body: it ends early")
    return out


def _lz4(body, limit, max_bytes):
    import lz4.frame
    inflater = lz4.frame.LZ4FrameDecompressor()
    try:
        out = inflater.decompress(body, max_length=limit + 1)
    except RuntimeError as exc:
        raise BodyRefused(400, "malformed lz4 body: %s" % exc) from None
    if len(out) > limit:
        raise _too_big(out, limit, max_bytes)
    if not inflater.eof:
        raise BodyRefused(400, "malformed lz4 body: it ends early")
    return out
