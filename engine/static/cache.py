"""The per-worker in-memory cache of small files (bounded LRU)."""
from collections import OrderedDict


# ---- the in-memory cache ----------------------------------------------------
class Cached:
    """One small file held in memory, with its validators pre-rendered."""
    __slots__ = ("path", "sig", "body", "etag", "mtime", "last_modified", "content_type")

    def __init__(self, path, sig, body, etag, mtime, last_modified, content_type):
        self.path = path
        self.sig = sig
        self.body = body
        self.etag = etag
        self.mtime = mtime
        self.last_modified = last_modified
        self.content_type = content_type


class FileCache:
    """LRU of small files keyed by the request path, bounded by total bytes."""

    def __init__(self, max_bytes, max_file_bytes):
        self.max_bytes = max_bytes
        self.max_file_bytes = min(max_file_bytes, max_bytes)
        self.entries = OrderedDict()
        self.size = 0

    def get(self, key):
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
        return entry

    def put(self, key, entry):
        if not self.max_bytes or len(entry.body) > self.max_file_bytes:
            return
        self.drop(key)
        self.entries[key] = entry
        self.size += len(entry.body)
        while self.size > self.max_bytes:
            _, old = self.entries.popitem(last=False)
            self.size -= len(old.body)

    def drop(self, key):
        old = self.entries.pop(key, None)
        if old is not None:
            self.size -= len(old.body)
