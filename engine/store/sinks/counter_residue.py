"""Counter increments a store has not confirmed yet, kept on disk until it does.

Why: Cassandra counters are not idempotent. A batch whose rows were all
written but some of whose ``total = total + n`` updates failed must not be
written again whole — the confirmed increments would count twice. So the
Cassandra sink keeps only what failed, here, and reports the batch written:
the spool moves on, and this residue is retried by itself until the store
takes it. The residue is durable, so a worker that dies or stops during an
outage hands it to the next one instead of leaving the batch to be replayed.

Files, in ``SpoolDirectory``: ``<prefix>-<pid>-<tag>.counters`` (``tag`` random per
residue, as the spool's: a container's restart brings the same pids back; JSON: a list of
``[table, key, n]``, replaced atomically: write a temporary file, fsync,
rename) and ``<same>.lock``, on which the owner holds an exclusive ``flock``
for as long as it lives. A ``.lock`` that can be locked has no live owner:
``adopt_orphans`` merges its residue into ours (saved first), then deletes
the orphan's files. Only a crash between those two steps can apply an orphan's
residue twice.

Keys are fan-out counter keys (engine/store/fanout.py): text and integers.
Files written before keys were text carried dates and UUIDs tagged,
``{"d": "2026-11-28"}``, ``{"u": "…"}``; they are read as that text.
"""
import fcntl
import glob
import os
import secrets
import threading

import orjson


def _decode(value):
    if isinstance(value, dict):             # a tagged date or UUID of an older file
        return value.get("d") or value["u"]
    return value


def encode_items(items):
    """{(table, key tuple): n} -> JSON bytes."""
    return orjson.dumps([[t, list(key), n] for (t, key), n in items.items()])


def decode_items(data):
    out = {}
    for table, key, n in orjson.loads(data):
        k = (table, tuple(_decode(v) for v in key))
        out[k] = out.get(k, 0) + int(n)
    return out


class CounterResidue:
    def __init__(self, directory, prefix):
        self.dir = directory
        self.prefix = prefix
        self.items = {}          # (table, key tuple) -> n not yet confirmed
        self.base = None         # our files, without extension
        self.lock_fd = None
        # add and confirm run in executor threads, possibly two at once (a
        # failed batch's increments while a resend is confirmed): one at a
        # time, or two saves race on the same .tmp file
        self._mutex = threading.Lock()

    def snapshot(self):
        """A copy of the items, safe while another thread changes them."""
        with self._mutex:
            return dict(self.items)

    # ---- ownership -------------------------------------------------------
    def open(self):
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self.base = os.path.join(self.dir, f"{self.prefix}-{os.getpid()}-{secrets.token_hex(4)}")
        self.lock_fd = os.open(self.base + ".lock", os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def adopt_orphans(self):
        """Take over the residue of owners that are gone; returns how many
        increments were adopted."""
        adopted = 0
        for lock_path in glob.glob(os.path.join(self.dir, f"{self.prefix}-*.lock")):
            base = lock_path[:-len(".lock")]
            if base == self.base:
                continue
            try:
                fd = os.open(lock_path, os.O_RDWR)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue             # its owner lives
            try:
                items = self._read(base + ".counters")
                if items:
                    self.add(items)      # saved before the orphan goes
                    adopted += len(items)
                for path in (base + ".counters", lock_path):
                    try:
                        os.unlink(path)
                    except FileNotFoundError:
                        pass
            finally:
                os.close(fd)
        return adopted

    @staticmethod
    def _read(path):
        try:
            with open(path, "rb") as fh:
                return decode_items(fh.read())
        except FileNotFoundError:
            return {}

    # ---- changes -----------------------------------------------------------
    def add(self, items):
        """Keep ``items`` ({(table, key): n}) until confirmed; durable on return."""
        with self._mutex:
            for k, n in items.items():
                self.items[k] = self.items.get(k, 0) + n
            self._save()

    def confirm(self, taken):
        """The store took ``taken`` ({(table, key): n}, what was sent)."""
        with self._mutex:
            for k, n in taken.items():
                left = self.items.get(k, 0) - n
                if left:
                    self.items[k] = left
                else:
                    self.items.pop(k, None)
            self._save()

    def _save(self):
        path = self.base + ".counters"
        if not self.items:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            return
        tmp = path + ".tmp"
        with open(tmp, "wb") as fh:
            fh.write(encode_items(self.items))
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp, path)
        dir_fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def close(self):
        """Release ownership. What is left stays on disk for the next owner;
        an empty residue leaves nothing behind."""
        if self.lock_fd is None:
            return
        if not self.items:
            try:
                os.unlink(self.base + ".lock")
            except FileNotFoundError:
                pass
        os.close(self.lock_fd)
        self.lock_fd = None
