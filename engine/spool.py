"""The durable spool: a per-worker write-ahead file of accepted events.

With ``"Durability": "spool"`` (the default) a track request is answered
only once its event is in this file and the file is fsynced. Requests do not
fsync one by one: appends go to an in-memory buffer, one committer writes and
fdatasyncs the whole buffer in a thread while the next buffer fills (group
commit), then releases every response of that group at once. Only committed
events reach the batcher, so a failed commit (disk full) answers 503 and
nothing the client was not told about is stored.

File format (``<SpoolDirectory>/w<pid>-<tag>-<n>.spool``; ``tag`` is random per
writer: in a container every restart brings the same pids back, and a new
worker must never take a dead one's file name)::

    header   8 bytes b"TRKSPOOL", uint32 version (1), uint32 0   (little-endian)
    record   uint32 length of payload, uint32 crc32(seq bytes + payload),
             uint64 seq, payload (the event as JSON; orjson)

``seq`` increases by one per event within a file. A record whose length
runs past the end of the file or whose crc does not match is a torn tail
from a crash: reading stops there and the rest is ignored, never replayed.

Progress: each sink acknowledges the highest ``seq`` it has written; the
acknowledgements live beside the file in ``<file>.acks`` (JSON object, sink
id -> seq, replaced atomically with a rename). A file whose events every sink
has acknowledged is deleted (a new file is started when the current one is
fully acknowledged and large enough).

Ownership: a worker holds an exclusive ``flock`` on each file it writes (the
file is created under a temporary name, locked, then renamed, so no other
process can see it unlocked). A file that can be locked has no live owner
(the kernel drops a dead process's locks): any worker adopts it —
``adopt_orphans`` — and replays, per sink, the records after that sink's
acknowledgement, then deletes it. That covers a worker killed with SIGKILL,
a supervisor killed and restarted, and a drain that timed out.

Counters are not double counted by replays into SQLite: the SQLite sink
skips, inside the batch's transaction, every event whose ``eid`` is already
stored, and a batch's events and counters commit together. Cassandra's
counters cannot be checked that way: its sink reports a batch written once its
rows are in and keeps the counter updates that failed in a durable residue of
its own (engine/sinks/counter_residue.py), so the spool never replays a batch
whose counters were partly applied; it may still count a replayed batch twice
if the process died after Cassandra took the whole batch and before the
acknowledgement was saved here (milliseconds).
"""
import fcntl
import os
import secrets
import struct
import zlib

import orjson

MAGIC = b"TRKSPOOL"
VERSION = 1
HEADER = struct.Struct("<8sII")
RECORD = struct.Struct("<IIQ")          # length, crc32, seq
SEQ = struct.Struct("<Q")


class SpoolFull(Exception):
    """The spool is over its size limit: refuse new events (503)."""


def sink_id(index, sink):
    return f"{index}:{sink.service}"


# ---- reading ----------------------------------------------------------------
class SpoolReader:
    """Records of a spool file in order, read incrementally; stops at a torn
    tail (``torn`` is then True)."""

    def __init__(self, path):
        self.path = path
        self.torn = False
        self.fh = open(path, "rb")
        head = self.fh.read(HEADER.size)
        if len(head) < HEADER.size:
            self.torn = len(head) > 0
            self.done = True
            return
        magic, version, _ = HEADER.unpack(head)
        if magic != MAGIC or version != VERSION:
            self.fh.close()
            raise ValueError(f"{path}: not a version-{VERSION} tracker spool file")
        self.done = False

    def __iter__(self):
        return self

    def __next__(self):
        if self.done:
            raise StopIteration
        head = self.fh.read(RECORD.size)
        if len(head) < RECORD.size:
            return self._end(len(head) > 0)
        length, crc, seq = RECORD.unpack(head)
        payload = self.fh.read(length)
        if len(payload) < length or zlib.crc32(payload, zlib.crc32(SEQ.pack(seq))) != crc:
            return self._end(True)
        try:
            return seq, orjson.loads(payload)
        except orjson.JSONDecodeError:
            return self._end(True)

    def _end(self, torn):
        self.torn = torn
        self.done = True
        self.fh.close()
        raise StopIteration


def read_records(path):
    """All (seq, event) pairs of a small spool file, and whether it ended cleanly."""
    reader = SpoolReader(path)
    records = list(reader)
    return records, not reader.torn


def encode_record(seq, payload):
    crc = zlib.crc32(payload, zlib.crc32(SEQ.pack(seq)))
    return RECORD.pack(len(payload), crc, seq) + payload


def read_acks(path):
    try:
        with open(path + ".acks", "rb") as fh:
            return {k: int(v) for k, v in orjson.loads(fh.read()).items()}
    except (FileNotFoundError, orjson.JSONDecodeError, AttributeError, ValueError):
        return {}


def write_acks(path, acks):
    tmp = path + ".acks.tmp"
    with open(tmp, "wb") as fh:
        fh.write(orjson.dumps(acks))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path + ".acks")


def remove_spool(path):
    for name in (path, path + ".acks", path + ".acks.tmp"):
        try:
            os.unlink(name)
        except FileNotFoundError:
            pass


def try_lock(path):
    """An fd holding an exclusive lock on ``path``, or None if it is owned."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    if not os.path.exists(path):   # deleted by its adopter after we opened it
        os.close(fd)
        return None
    return fd


# ---- writing ----------------------------------------------------------------
class SpoolWriter:
    """The worker's own spool file; group commit and acknowledgements.

    Loop-side methods (``append``, ``take_group``) run on the event loop;
    ``write_group``, ``save_acks`` and rotation run in the spool's single
    I/O thread, which serialises every file operation.
    """

    def __init__(self, directory, sink_ids, max_bytes, rotate_bytes=8 << 20):
        self.directory = directory
        self.sink_ids = list(sink_ids)
        self.max_bytes = max_bytes
        # Start a new file once the current one is delivered and this big:
        # well under the limit, so a recovered spool drops below it.
        self.rotate_bytes = min(rotate_bytes, max_bytes // 8)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.tag = secrets.token_hex(4)
        self.counter = 0
        self.seq = 0                 # last seq handed out
        self.written_seq = 0         # last seq fdatasynced
        self.buffer = bytearray()
        self.group = []              # (seq, event) of the open group
        self.epoch = 1               # number of the open group
        self.acks = dict.fromkeys(self.sink_ids, 0)
        self.path, self.fd, self.size = None, None, 0
        self.pressure = False        # a write failed (disk full?): rotate when delivered
        self.open_file()

    # ---- file ------------------------------------------------------------
    def open_file(self):
        self.counter += 1
        final = os.path.join(self.directory,
                             f"w{os.getpid()}-{self.tag}-{self.counter}.spool")
        tmp = final + ".new"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, HEADER.pack(MAGIC, VERSION, 0))
        os.fsync(fd)
        os.replace(tmp, final)
        self.path, self.fd, self.size = final, fd, HEADER.size
        write_acks(final, {sid: self.written_seq for sid in self.sink_ids})

    # ---- event loop side -------------------------------------------------
    def append(self, event):
        """Add an event to the open group; returns the group's epoch."""
        payload = orjson.dumps(event)
        if self.size + len(self.buffer) + len(payload) > self.max_bytes:
            raise SpoolFull(f"spool {self.path} reached {self.max_bytes} bytes")
        self.seq += 1
        self.buffer += encode_record(self.seq, payload)
        self.group.append((self.seq, event))
        return self.epoch

    def take_group(self):
        """Close the open group: (epoch, bytes, [(seq, event)])."""
        taken = (self.epoch, bytes(self.buffer), self.group)
        self.buffer, self.group = bytearray(), []
        self.epoch += 1
        return taken

    @property
    def bytes_used(self):
        return self.size + len(self.buffer)

    # ---- I/O thread side -------------------------------------------------
    def write_group(self, data, last_seq):
        """Append and fdatasync; on failure cut the file back and re-raise."""
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]
            os.fdatasync(self.fd)
        except OSError:
            try:
                os.ftruncate(self.fd, self.size)
            except OSError:
                pass
            self.pressure = True
            self.rotate_if_delivered()
            raise
        self.size += len(data)
        self.written_seq = last_seq

    def save_acks(self, acks):
        """Persist acknowledgements; start a new file once the current one is
        fully delivered and big enough (or a write failed for lack of space)."""
        self.acks.update(acks)
        if not self.rotate_if_delivered():
            write_acks(self.path, self.acks)

    def rotate_if_delivered(self):
        delivered = all(self.acks[s] >= self.written_seq for s in self.sink_ids)
        if not delivered or (self.size < self.rotate_bytes and not self.pressure):
            return False
        old, old_fd = self.path, self.fd
        remove_spool(old)            # free the space first: the disk may be full
        os.close(old_fd)
        self.open_file()
        self.pressure = False
        return True

    def close(self):
        """Drop the file if everything in it was delivered, else leave it
        (unlocked) for the next worker to adopt."""
        delivered = all(self.acks[s] >= self.written_seq for s in self.sink_ids)
        if delivered:
            remove_spool(self.path)
        else:
            write_acks(self.path, self.acks)
        os.close(self.fd)
        return delivered


def find_orphans(directory, exclude=()):
    """Spool files in ``directory`` with no live owner: [(path, locked fd)]."""
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        path = os.path.join(directory, name)
        if not name.endswith(".spool") or path in exclude:
            continue
        fd = try_lock(path)
        if fd is not None:
            found.append((path, fd))
    return found
