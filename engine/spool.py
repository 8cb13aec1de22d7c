"""The spool: the durable log between the ingest stage and the store stage.

Each HTTP worker appends accepted events to its own files; store processes
(workers/store.py) read them, write every sink and record how far each sink
got. This module owns the file format, the writer the Python ingest path
uses, the reader, and the position (ack) files; the compiled ingest path
writes the very same files.

Files (``<SpoolDirectory>/w<pid>-<tag>-<n>.spool``; ``tag`` is random per
writer: in a container every restart brings the same pids back, and a new
worker must never take a dead one's file name; wave-1 names had no tag)::

    header   8 bytes b"TRKSPOOL", uint32 version, uint32 0    (little-endian)
    record   uint32 length of payload, uint32 crc32(seq as u64 LE + payload),
             uint64 seq, payload

Version 2 (written now): the payload is an event record (engine/record.py).
Version 1 (wave 1): the payload is the event as JSON; still read, so a
spool left on disk by an upgrade is replayed. ``seq`` increases by one per
record within a file. Readers rely only on it increasing: this writer hands
out seqs per worker (they continue across its files, since a group is
encoded before the I/O thread knows which file it lands in) and a group
whose write failed leaves a gap; the compiled writer starts each file at 1.
Lag is counted from seq differences, so gaps only over-state it. A record whose
length runs past the readable end or whose crc does not match is a torn
tail from a crash: reading stops there and the rest is never replayed.
The compiled writer (engine/ingest/_spool.pyx) writes its records over zeros
it wrote ahead of them (its fdatasync then commits no new file size) and
cuts the file back to its records when it closes it; a file whose writer
crashed ends in up to 1 MiB of zeros, which read as a torn tail (a frame of
zeros fails the seq check, and no record is empty).

Creating a file: write ``<name>.new``, ``flock(LOCK_EX)`` it, write and fsync
the header, rename. The writer holds the lock on its CURRENT file only; when
it rotates (the file passed ``rotate_bytes``) or stops, it closes the file,
which releases the lock. The writer never deletes a file.

Live or final: a file whose lock can be taken (``is_final``) has no writer
and is read to its end. A locked file is live: it is read only up to the
committed offset the writer publishes on the worker board
(engine/board.py), and only while the board's file number is that file's.

Positions (written by the store processes): ``<file>.ack-<sink id>``, JSON
``{"seq": S, "offset": O}``: every record with seq <= S, ending at byte O,
is written to that sink. Replaced atomically (temporary file, fsync,
rename). The sink id is ``<index in Notify>-<service>``. A wave-1
``<file>.acks`` (JSON ``{"<index>:<service>": seq}``) is honoured when a
sink has no ack file of its own yet. A final file is deleted, with its ack
files, once every configured sink's ack covers its last record.

Exactness (why replays double nothing): a record is written to a sink and
only then its position saved, so a crash between the two writes the record
again. SQLite skips, inside the batch's transaction, every event whose eid
is stored, and an event's rows and counters commit together: exact.
Cassandra's rows are idempotent; its counters are sent once per batch and
the failed ones kept in a durable residue (engine/store/sinks/counter_residue.py)
adopted across processes; a crash in the milliseconds between Cassandra
confirming a batch and its position being saved counts that batch twice.
"""
import fcntl
import glob
import os
import re
import secrets
import struct
import zlib

import orjson

from engine.system.compiled import compiled

_frames = compiled("engine._frames", "TRACKER_PURE_FRAMES")
MORE, TORN, BIGGER = 0, 1, 2     # the framing's states (engine/_frames.pyx)

MAGIC = b"TRKSPOOL"
VERSION = 2                              # written
VERSIONS = (1, 2)                        # read
HEADER = struct.Struct("<8sII")
RECORD = struct.Struct("<IIQ")           # length, crc32, seq
SEQ = struct.Struct("<Q")
NAME = re.compile(r"^w(\d+)-(?:[0-9a-f]+-)?(\d+)\.spool$")
READ_BLOCK = 1 << 20


class SpoolFull(Exception):
    """The spool is over its size limit: refuse new events (503)."""


class SpoolFormatError(ValueError):
    """Not a spool file this version can read."""


def file_name(pid, number, tag):
    return f"w{pid}-{tag}-{number}.spool"


def parse_name(name):
    """(writer pid, file number) of a spool file's base name, or None."""
    m = NAME.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def encode_record(seq, payload):
    crc = zlib.crc32(payload, zlib.crc32(SEQ.pack(seq)))
    return RECORD.pack(len(payload), crc, seq) + payload


def is_final(path):
    """True when no process holds ``path``'s lock (its writer is gone or
    closed it); False while it is written, or when it no longer exists."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)      # closing drops the lock, if it was taken
    return True


# ---- reading ----------------------------------------------------------------
class FileCursor:
    """Reads one spool file's records forward from a position.

    ``read(limit, most)`` returns up to ``most`` records as (seq, payload,
    end offset) that lie wholly before byte ``limit``; ``torn`` turns True
    when a record before ``limit`` is damaged (reading then stops for good).
    Payloads are copies (bytes) the caller may keep."""

    def __init__(self, path, offset=None, seq=0):
        self.path = path
        self.fd = os.open(path, os.O_RDONLY)
        try:
            head = os.pread(self.fd, HEADER.size, 0)
            if len(head) < HEADER.size:
                raise SpoolFormatError(f"{path}: shorter than a spool header")
            magic, version, _ = HEADER.unpack(head)
            if magic != MAGIC or version not in VERSIONS:
                raise SpoolFormatError(f"{path}: not a version-1 or -2 tracker spool file")
        except BaseException:
            os.close(self.fd)
            raise
        self.version = version
        self.torn = False
        self.skipped = 0                     # records at or below skip_to passed over
        self.seq = seq                       # last record passed
        self.offset = HEADER.size            # where the next record starts
        self.skip_to = 0
        if offset is not None and HEADER.size <= offset <= os.fstat(self.fd).st_size:
            self.offset = offset
        else:                                # no offset (wave-1 ack): skip by seq
            self.skip_to, self.seq = seq, 0

    def size(self):
        return os.fstat(self.fd).st_size

    def read(self, limit, most):
        out = []
        while len(out) < most and self.offset < limit and not self.torn:
            # about a KiB per record wanted: no MiB re-read for a few records
            want = min(limit - self.offset, READ_BLOCK, (most - len(out)) * 1024 + 4096)
            buf = os.pread(self.fd, want, self.offset)
            got = self._parse(buf, limit, most, out)
            if got == 0:
                break
        return out

    def _parse(self, buf, limit, most, out):
        """Take whole records from ``buf`` (read at ``self.offset``); returns
        the bytes consumed. A record longer than the buffer is read alone."""
        base = self.offset
        take = self._take if _frames is None else _frames.take
        while True:
            pos, self.seq, state, skipped = take(buf, base, limit, most, self.seq,
                                                 self.skip_to, out)
            self.skipped += skipped
            if state != BIGGER:
                break
            length = RECORD.unpack_from(buf, 0)[0]
            buf = os.pread(self.fd, 16 + length, base)
            if len(buf) < 16 + length:
                state, pos = TORN, 0
                break
        n = len(buf)
        if state == TORN:
            self.torn = True
        elif pos + 16 > n and base + n >= limit and base + pos < limit:
            self.torn = True                 # a few stray bytes at the very end
        self.offset = base + pos
        return pos

    @staticmethod
    def _take(buf, base, limit, most, seq, skip_to, out):
        """engine/_frames.pyx's ``take``, in Python (``TRACKER_PURE_FRAMES=1``)."""
        view, n, pos, skipped = memoryview(buf), len(buf), 0, 0
        unpack, crc32 = RECORD.unpack_from, zlib.crc32
        while pos + 16 <= n and len(out) < most:
            length, crc, rseq = unpack(buf, pos)
            end = pos + 16 + length
            if base + end > limit:
                return pos, seq, TORN, skipped       # runs past the readable end
            if end > n:
                return pos, seq, BIGGER if pos == 0 else MORE, skipped
            if crc32(view[pos + 8:end]) != crc or rseq <= seq:
                return pos, seq, TORN, skipped
            pos, seq = end, rseq
            if rseq > skip_to:
                out.append((rseq, buf[end - length:end], base + end))
            else:
                skipped += 1
        return pos, seq, MORE, skipped

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def decoder(version):
    """The payload -> event dict function for a file version."""
    if version == 1:
        return orjson.loads
    from engine._parse import decode
    return decode


def read_records(path):
    """All (seq, event) of a spool file and whether it ended cleanly (tools, tests)."""
    cursor = FileCursor(path)
    try:
        decode = decoder(cursor.version)
        records = [(seq, decode(p)) for seq, p, _ in cursor.read(cursor.size(), 1 << 62)]
        return records, not cursor.torn
    finally:
        cursor.close()


# ---- positions ------------------------------------------------------------------
def sink_id(index, service):
    """The id of Notify entry ``index`` in ack file names."""
    return f"{index}-{re.sub(r'[^A-Za-z0-9_.]', '_', service)}"


def legacy_sink_id(index, service):
    return f"{index}:{service}"


def read_position(path, sid, legacy=None):
    """(seq, offset or None) a sink has written of ``path``; (0, None) if none."""
    try:
        with open(f"{path}.ack-{sid}", "rb") as fh:
            data = orjson.loads(fh.read())
        return int(data["seq"]), int(data["offset"])
    except FileNotFoundError:
        pass
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return 0, None                       # damaged: replay (idempotent)
    if legacy is not None:
        try:
            with open(path + ".acks", "rb") as fh:
                return int(orjson.loads(fh.read()).get(legacy, 0)), None
        except (FileNotFoundError, orjson.JSONDecodeError, AttributeError, ValueError,
                TypeError):
            pass
    return 0, None


def write_position(path, sid, seq, offset):
    target = f"{path}.ack-{sid}"
    tmp = target + ".tmp"
    with open(tmp, "wb") as fh:
        fh.write(orjson.dumps({"seq": seq, "offset": offset}))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, target)


def remove_spool(path):
    """Delete a spool file and every position file beside it."""
    for name in [path] + glob.glob(glob.escape(path) + ".ack*"):
        try:
            os.unlink(name)
        except FileNotFoundError:
            pass


def spool_files(directory):
    """{path: (pid, number)} of the spool files in ``directory``."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return {}
    found = {}
    for name in names:
        parsed = parse_name(name)
        if parsed is not None:
            found[os.path.join(directory, name)] = parsed
    return found


# ---- writing (the Python ingest path) ------------------------------------------
class SpoolWriter:
    """An HTTP worker's spool: group commit into its current file.

    Loop-side methods (``append``, ``take_group``, ``refresh_usage``) run on
    the event loop; ``write_group`` and ``close`` run in the spool's single
    I/O thread. ``publish(file number, committed bytes)`` is called after
    every durable group (the worker board's ``spool`` field).
    ``durable=False`` ("Durability": "memory") writes without fdatasync:
    a process crash loses nothing, a power cut may lose the last seconds.
    """

    def __init__(self, directory, max_bytes, rotate_bytes=8 << 20, durable=True,
                 publish=None):
        self.directory = directory
        self.max_bytes = max_bytes
        self.rotate_bytes = min(rotate_bytes, max_bytes // 8)
        self.durable = durable
        self.publish = publish or (lambda number, committed: None)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.number = 0
        self.tag = secrets.token_hex(4)
        self.seq = 0                 # last seq handed out
        self.buffer = bytearray()
        self.group_last = 0          # seq of the open group's last record
        self.group_size = 0          # records in the open group
        self.epoch = 1               # number of the open group
        self.path, self.fd, self.size = None, None, 0
        self.files = {}              # own files still on disk -> bytes at last look
        self.open_file()

    # ---- file (I/O thread, or before serving) ----------------------------
    def open_file(self):
        self.number += 1
        final = os.path.join(self.directory, file_name(os.getpid(), self.number, self.tag))
        tmp = final + ".new"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, HEADER.pack(MAGIC, VERSION, 0))
            os.fsync(fd)
            os.replace(tmp, final)
        except OSError:
            os.close(fd)
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        self.path, self.fd, self.size = final, fd, HEADER.size
        self.files[final] = HEADER.size
        self.publish(self.number, self.size)

    def close_file(self):
        """Close the current file: it becomes final for the store to finish."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    # ---- event loop side -------------------------------------------------
    def append(self, payload):
        """Add one record to the open group; returns the group's epoch."""
        if self.bytes_used + len(payload) + RECORD.size > self.max_bytes:
            raise SpoolFull(f"spool of worker {os.getpid()} reached {self.max_bytes} bytes")
        self.seq += 1
        self.buffer += encode_record(self.seq, payload)
        self.group_last = self.seq
        self.group_size += 1
        return self.epoch

    def take_group(self):
        """Close the open group: (epoch, bytes, records)."""
        taken = (self.epoch, bytes(self.buffer), self.group_size)
        self.buffer, self.group_size = bytearray(), 0
        self.epoch += 1
        return taken

    @property
    def pending(self):
        return self.group_size

    @property
    def bytes_used(self):
        """Bytes of this worker's files still on disk plus the open group."""
        return sum(self.files.values()) + len(self.buffer)

    def refresh_usage(self):
        """Re-stat this worker's files: the store deletes them once written."""
        for path in list(self.files):
            if path == self.path:
                self.files[path] = self.size
                continue
            try:
                self.files[path] = os.stat(path).st_size
            except FileNotFoundError:
                del self.files[path]

    # ---- I/O thread side -------------------------------------------------
    def write_group(self, data):
        """Append a group and make it durable; on failure cut the file back,
        close it (so the store can finish and delete it and free the disk)
        and re-raise. The next group starts a new file."""
        if self.fd is None:
            self.open_file()     # raises while the disk is still full
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]
            if self.durable:
                os.fdatasync(self.fd)
        except OSError:
            try:
                os.ftruncate(self.fd, self.size)
            except OSError:
                pass
            self.close_file()
            raise
        self.size += len(data)
        self.files[self.path] = self.size
        self.publish(self.number, self.size)
        if self.size >= self.rotate_bytes:
            self.close_file()
            self.open_file()

    def close(self):
        self.close_file()
