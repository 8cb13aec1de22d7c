"""Content types from the standard table, plus what the web needs beyond it."""
import mimetypes
import os

# Not in Python 3.11's built-in table, common on the web.
EXTRA_TYPES = {".woff": "font/woff", ".woff2": "font/woff2", ".avif": "image/avif",
               ".mjs": "text/javascript", ".webmanifest": "application/manifest+json"}
# A compressed file (x.tar.gz) is served as the archive it is, not with a
# Content-Encoding the browser would silently undo.
ENCODED_TYPES = {"gzip": "application/gzip", "bzip2": "application/x-bzip2",
                 "xz": "application/x-xz", "br": "application/x-brotli",
                 "compress": "application/x-compress"}
TEXTUAL = ("application/javascript", "application/json", "application/xml",
           "image/svg+xml", "application/manifest+json")


# ---- content types ----------------------------------------------------------
class ContentTypes:
    """Content-Type by file extension from Python's built-in table (not
    /etc/mime.types, so every machine answers the same), memoised."""

    def __init__(self):
        self.table = mimetypes.MimeTypes(filenames=())
        self.memo = {}

    def __call__(self, path):
        name = os.path.basename(path).decode("utf-8", "replace").lower()
        dot = name.rfind(".")
        ext = name[dot:] if dot > 0 else ""
        found = self.memo.get(ext) if ext.count(".") == 1 else None
        if found is None:
            found = self._guess(name, ext)
            if len(self.memo) < 1024:       # the memo cannot grow without end
                self.memo[ext] = found
        return found

    def _guess(self, name, ext):
        kind, encoding = self.table.guess_type(name, strict=False)
        if encoding:
            kind = ENCODED_TYPES.get(encoding, "application/octet-stream")
        kind = EXTRA_TYPES.get(ext) or kind or "application/octet-stream"
        if kind.startswith("text/") or kind in TEXTUAL:
            kind += "; charset=utf-8"
        return kind.encode()
