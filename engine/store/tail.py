"""Tailing the spool: which files a sink reads, how far, and when a file is done.

``SpoolTail`` is one sink's view of the spool directory in one store
process: the files it owns (all of them, or its share by writer pid), a
cursor per file starting at that sink's saved position, and the readable
end of each file:

- a FINAL file (no writer holds its lock) is read to its end; a torn tail
  (crash mid-write) ends it;
- a LIVE file is read up to the committed offset its writer publishes on the
  worker board, and only while the board's file number is that file's.

Reading hands back records a chunk per file (file, events, records, last
seq, last end offset, count); the caller
batches, writes, then calls ``note_written`` with how far each file got and
saves those positions (``save_positions``). A final file read to its end and written by this sink is
deleted once every configured sink's position covers it (``finish``).
Lag (records read or readable but not written, and the age of the oldest)
comes from a framing-only count ahead of the written position.
"""
import os
import struct
import time

from engine.board import unpack_spool
from engine.logs import log
from engine.spool import (HEADER, RECORD, FileCursor, SpoolFormatError, decoder, is_final,
                          read_position, remove_spool, spool_files, write_position)

SCAN_EVERY = 0.2          # seconds between directory listings
LOCK_TEST_EVERY = 0.05    # seconds between lock tests of a caught-up live file
COUNT_MAX = 32 << 20      # bytes framed per file per lag count: a deep backlog is
                          # counted over a few ticks instead of stalling one
CREATED = struct.Struct("<q")

# path -> sink ids that wrote all of it, in this process: a position that
# could not be saved (the disk is full: the very case where deleting the
# file matters most) still counts for the sinks of this process.
_finished_here = {}


class TailFile:
    """One spool file, as one sink reads it."""
    __slots__ = ("path", "pid", "number", "cursor", "decode", "final", "done_reading",
                 "in_flight", "written_seq", "written_offset", "written_count",
                 "count_offset", "counted", "finished", "lock_tested")

    def __init__(self, path, pid, number, cursor):
        self.path, self.pid, self.number, self.cursor = path, pid, number, cursor
        self.decode = decoder(cursor.version)
        self.final = False
        self.done_reading = False
        self.in_flight = 0                     # batches holding its records, not yet written
        self.written_seq = cursor.seq if not cursor.skip_to else cursor.skip_to
        self.written_offset = cursor.offset
        self.written_count = 0
        self.count_offset = cursor.offset      # framing count ahead (lag)
        self.counted = 0
        self.finished = False
        self.lock_tested = 0.0


class SpoolTail:
    def __init__(self, directory, sid, legacy_sid, all_sids, owns, board=None):
        self.directory = directory
        self.sid = sid
        self.legacy_sid = legacy_sid
        self.all_sids = all_sids               # (sid, legacy sid) of every configured sink
        self.owns = owns                       # pid -> bool: this process reads that writer
        self.board = board
        self.files = {}                        # path -> TailFile
        self.order = []                        # paths, oldest first
        self.scanned_at = 0.0
        self.slots = {}                        # pid -> board slot number
        self.bad = set()                       # paths that are not readable spool files
        self.final_only = False                # draining: live files wait for the next store

    # ---- finding files ---------------------------------------------------
    def scan(self, force=False):
        now = time.monotonic()
        if not force and now - self.scanned_at < SCAN_EVERY:
            return
        self.scanned_at = now
        if self.board is not None:
            self.slots = {pid: number for pid, (number, kind, *_rest)
                          in self.board.live().items() if kind == "http"}
        for path, (pid, number) in sorted(spool_files(self.directory).items(),
                                          key=lambda item: item[1]):
            if path not in self.files and path not in self.bad and self.owns(pid):
                self._open(path, pid, number)

    def _open(self, path, pid, number):
        seq, offset = read_position(path, self.sid, self.legacy_sid)
        try:
            cursor = FileCursor(path, offset, seq)
        except FileNotFoundError:
            return                             # finished by another process meanwhile
        except SpoolFormatError as exc:
            self.bad.add(path)
            log.error("not reading an unreadable spool file", path=path, error=str(exc))
            return
        self.files[path] = TailFile(path, pid, number, cursor)
        self.order.append(path)

    # ---- reading -----------------------------------------------------------
    def readable_end(self, f):
        """The byte up to which ``f`` may be read now (None: nothing yet)."""
        if f.final:
            return f.cursor.size()
        number = self.slots.get(f.pid)
        if number is not None and self.board is not None and not self.final_only:
            pid, _k, _i, _b, spool, _a = self.board.read(number)[:6]
            if pid == f.pid:
                file_number, committed = unpack_spool(spool)
                if file_number == f.number:
                    if f.cursor.offset < committed:
                        return committed
                    # caught up with a live writer: it may have closed the file
                    # (drain, failed write); test its lock now and then only
                    now = time.monotonic()
                    if now - f.lock_tested < LOCK_TEST_EVERY:
                        return None
                    f.lock_tested = now
        if is_final(f.path):
            f.final = True
            return f.cursor.size()
        return None

    def read(self, most):
        """Up to ``most`` records from the owned files, oldest file first, one
        chunk per file: [(file, events, records, seq, end, count)]: the
        events that decoded and their records (seq, payload, end), whose
        payloads ``file.decode`` turns into those events again; the last
        record's seq and end offset, and how many were read (a record that
        does not decode is logged and skipped; its position still advances)."""
        out, got = [], 0
        for path in self.order:
            if got >= most:
                break
            f = self.files[path]
            if f.done_reading:
                continue
            limit = self.readable_end(f)
            if limit is None:
                continue
            records = f.cursor.read(limit, most - got)
            if records:
                got += len(records)
                seq, _payload, end = records[-1]
                decode = f.decode
                try:        # one comprehension per file: no Python loop per record
                    events = [decode(payload) for _seq, payload, _end in records]
                    kept = records
                except ValueError:
                    events, kept = self._decode_each(f, records)
                out.append((f, events, kept, seq, end, len(records)))
            if f.final and (f.cursor.torn or (f.cursor.offset >= limit and got < most)):
                f.done_reading = True
                if f.cursor.torn:
                    log.warning("spool ended in a torn record (crash while writing); the "
                                "incomplete tail was skipped", path=path)
        return out

    @staticmethod
    def _decode_each(f, records):
        events, kept = [], []
        for record in records:
            try:
                events.append(f.decode(record[1]))
            except ValueError as exc:
                log.error("spool record does not decode; skipped", path=f.path,
                          seq=record[0], error=str(exc)[:200])
                continue
            kept.append(record)
        return events, kept

    # ---- progress ----------------------------------------------------------
    @staticmethod
    def note_written(marks):
        """A batch is stored: ``marks`` {TailFile: (seq, end, records)}.
        Updates the files (event loop); returns the positions to save with
        ``save_positions`` (in a thread: each is an fsync)."""
        saves = []
        for f, (seq, end, count) in marks.items():
            f.in_flight -= 1
            if seq > f.written_seq:
                f.written_seq, f.written_offset = seq, end
            f.written_count += count
            saves.append((f.path, f.written_seq, f.written_offset))
        return saves

    def save_positions(self, saves):
        for path, seq, offset in saves:
            if os.path.exists(path):
                write_position(path, self.sid, seq, offset)

    def finishable(self):
        """Files read to their end whose every batch is written; marked
        finished here (event loop), then ``finish`` them in a thread."""
        done = [f for f in (self.files[p] for p in self.order)
                if f.done_reading and not f.in_flight and not f.finished]
        for f in done:
            f.finished = True
        return done

    def finishable_count(self):
        return sum(1 for f in self.files.values()
                   if f.done_reading and not f.in_flight and not f.finished)

    def finish(self, f):
        """``f`` is read to its end and written: save the final position and
        delete the file if every sink has written all of it (blocking)."""
        last = f.cursor.seq
        here = _finished_here.setdefault(f.path, set())
        here.add(self.sid)
        if last > f.written_seq or f.cursor.offset != f.written_offset:
            f.written_seq, f.written_offset = max(last, f.written_seq), f.cursor.offset
            try:
                if os.path.exists(f.path):
                    write_position(f.path, self.sid, f.written_seq, f.written_offset)
            except OSError as exc:
                log.warning("could not save a spool position", path=f.path, error=str(exc))
        covered = all(sid in here or read_position(f.path, sid, legacy)[0] >= last
                      for sid, legacy in self.all_sids)
        deleted = covered and os.path.exists(f.path)
        if covered:
            remove_spool(f.path)
            _finished_here.pop(f.path, None)
        return deleted

    def forget(self, f):
        f.cursor.close()
        self.files.pop(f.path, None)
        if f.path in self.order:
            self.order.remove(f.path)

    # ---- lag ---------------------------------------------------------------
    def lag(self, now_ms):
        """(records not yet written by this sink, seconds since the oldest
        of them was accepted) over the owned files."""
        events, oldest = 0, None
        for path in self.order:
            f = self.files[path]
            if f.finished:
                continue
            limit = None if f.final else self._committed(f)
            if limit is None and (f.final or is_final(f.path)):
                f.final, limit = True, f.cursor.size()
            if limit is not None and limit > f.count_offset:
                n, f.count_offset = count_frames(f.cursor.fd, f.count_offset,
                                                 min(limit, f.count_offset + COUNT_MAX))
                f.counted += n
            ahead = f.counted - f.written_count - f.cursor.skipped
            if ahead > 0:
                events += ahead
                if oldest is None:
                    oldest = created_at(f.cursor.fd, f.written_offset, f.cursor.version)
        seconds = max(0.0, (now_ms - oldest) / 1000) if oldest else 0.0
        return events, seconds

    def _committed(self, f):
        number = self.slots.get(f.pid)
        if number is None or self.board is None:
            return None
        pid, _k, _i, _b, spool, _a = self.board.read(number)[:6]
        file_number, committed = unpack_spool(spool)
        return committed if pid == f.pid and file_number == f.number else None

    def close(self):
        for f in list(self.files.values()):
            f.cursor.close()
        self.files.clear()
        self.order.clear()


def count_frames(fd, offset, limit, block=1 << 20):
    """Whole records between ``offset`` and ``limit`` (framing only, no crc):
    (count, offset after the last whole record). An empty frame ends them:
    no record is empty, and a file its writer left with zeros written ahead
    of its records (a crash: engine/ingest/_spool.pyx) has them there."""
    count = 0
    unpack = RECORD.unpack_from
    while offset < limit:
        buf = os.pread(fd, min(block, limit - offset), offset)
        pos, n = 0, len(buf)
        while pos + 16 <= n:
            length = unpack(buf, pos)[0]
            if offset + pos + 16 + length > limit or length == 0:
                return count, offset + pos
            if pos + 16 + length > n:
                break
            pos += 16 + length
            count += 1
        if pos == 0:
            if n < 16 or offset + 16 + unpack(buf, 0)[0] > limit:
                return count, offset
            count += 1                           # one record bigger than the block
            pos = 16 + unpack(buf, 0)[0]
        offset += pos
    return count, offset


def created_at(fd, offset, version):
    """``created`` (ms) of the record starting at ``offset`` (version 2), or None."""
    if version != 2 or offset < HEADER.size:
        return None
    data = os.pread(fd, 16 + 10, offset)
    if len(data) < 26:
        return None
    return CREATED.unpack_from(data, 18)[0]
