"""The worker board: one shared-memory slot per child process.

The supervisor maps it (anonymous ``MAP_SHARED``) before the first fork and
hands every child a slot; the child writes its slot, anyone reads it:

- the supervisor reads heartbeats, and replaces a child whose event loop has
  been silent for ``WorkerTimeoutSeconds`` (a stuck loop would otherwise keep
  its SO_REUSEPORT socket and keep being handed connections);
- the store processes read how far each HTTP worker's spool file is
  committed, so they never read a group before it is durable.

Byte layout (little-endian; every field 8-byte aligned)::

    offset 0     header, 64 bytes: 8s magic b"TRKBOARD", u32 version 1,
                 u32 slots, rest zero
    offset 64    slots x 64 bytes:
                   u64 pid          0 = free
                   u32 kind         KINDS index (http, store, consume, acme)
                   u32 index        the child's index within its kind
                   u64 heartbeat    CLOCK_MONOTONIC ns of the last tick
                   u64 spool        (file number << 40) | committed bytes of
                                    that file: the spool file w<pid>-<n>.spool
                                    being written and how much of it is
                                    durable (fsynced; written in "memory"
                                    durability). One field, so a reader never
                                    pairs one file's number with another's size.
                   u64 accepted     events accepted since the child started
                   u64 down         store processes: bit i set while the sink of
                                    Notify[i] fails to write in this process
                                    (HTTP workers' /ready reads it for the
                                    Critical ones; so at most 64 Notify entries
                                    are tracked, the rest count as healthy)
                   16 bytes reserved

Single writer per slot (its owner; the supervisor only clears a dead
child's slot), aligned 8-byte stores and loads are atomic on x86-64 and
aarch64, so no lock is needed. The HTTP worker's committer thread writes
``spool`` from C through ``field_address``.
"""
import ctypes
import mmap
import os
import struct
import time

MAGIC = b"TRKBOARD"
VERSION = 1
HEADER = struct.Struct("<8sII")
HEADER_SIZE = 64
SLOT_SIZE = 64
SLOT = struct.Struct("<QIIQQQQ")     # pid, kind, index, heartbeat, spool, accepted, down
KINDS = ("none", "http", "store", "consume", "acme")
OFFSET_BITS = 40
OFFSET_MASK = (1 << OFFSET_BITS) - 1
FIELDS = {"pid": 0, "heartbeat": 16, "spool": 24, "accepted": 32, "down": 40}
U64 = struct.Struct("<Q")


def pack_spool(file_number, committed):
    return (file_number << OFFSET_BITS) | committed


def unpack_spool(value):
    """(file number, committed bytes)."""
    return value >> OFFSET_BITS, value & OFFSET_MASK


class Slot:
    """A child's view of its own slot."""
    __slots__ = ("board", "number", "base")

    def __init__(self, board, number):
        self.board = board
        self.number = number
        self.base = HEADER_SIZE + number * SLOT_SIZE

    def claim(self, kind, index):
        """Called in the child after the fork: the slot is now this process's."""
        SLOT.pack_into(self.board.map, self.base, os.getpid(), KINDS.index(kind), index,
                       time.monotonic_ns(), 0, 0, 0)

    def beat(self):
        U64.pack_into(self.board.map, self.base + 16, time.monotonic_ns())

    def set_accepted(self, n):
        U64.pack_into(self.board.map, self.base + 32, n)

    def set_spool(self, file_number, committed):
        U64.pack_into(self.board.map, self.base + 24, pack_spool(file_number, committed))

    def set_down(self, mask):
        U64.pack_into(self.board.map, self.base + 40, mask & 0xFFFFFFFFFFFFFFFF)

    def field_address(self, name):
        """Address of one u64 field, for C code that writes it directly."""
        return self.board.address + self.base + FIELDS[name]


class Board:
    def __init__(self, slots=256):
        self.slots = slots
        self.map = mmap.mmap(-1, HEADER_SIZE + slots * SLOT_SIZE,
                             flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
        HEADER.pack_into(self.map, 0, MAGIC, VERSION, slots)
        self.address = ctypes.addressof(ctypes.c_char.from_buffer(self.map))
        self.used = set()

    # ---- supervisor ------------------------------------------------------
    def take(self):
        """A free slot number for a child about to be forked."""
        for number in range(self.slots):
            if number not in self.used:
                self.used.add(number)
                self.clear(number)
                return number
        raise RuntimeError("no free worker-board slot")

    def release(self, number):
        """A child died: its slot is free again (readers see pid 0)."""
        self.clear(number)
        self.used.discard(number)

    def clear(self, number):
        SLOT.pack_into(self.map, HEADER_SIZE + number * SLOT_SIZE, 0, 0, 0, 0, 0, 0, 0)

    def slot(self, number):
        return Slot(self, number)

    # ---- readers ---------------------------------------------------------
    def read(self, number):
        """(pid, kind, index, heartbeat ns, spool, accepted, down) of one slot."""
        pid, kind, index, beat, spool, accepted, down = SLOT.unpack_from(
            self.map, HEADER_SIZE + number * SLOT_SIZE)
        return (pid, KINDS[kind] if kind < len(KINDS) else "none", index, beat, spool,
                accepted, down)

    def heartbeat(self, number):
        return U64.unpack_from(self.map, HEADER_SIZE + number * SLOT_SIZE + 16)[0]

    def live(self):
        """{pid: (number, kind, index, heartbeat, spool, accepted, down)} of the claimed slots."""
        found = {}
        for number in range(self.slots):
            pid, kind, index, beat, spool, accepted, down = self.read(number)
            if pid:
                found[pid] = (number, kind, index, beat, spool, accepted, down)
        return found

    def committed(self, pid):
        """(file number, committed bytes) of an HTTP worker's spool, or None."""
        for number in range(self.slots):
            slot_pid, kind, _i, _b, spool, _a, _d = self.read(number)
            if slot_pid == pid and kind == "http":
                return unpack_spool(spool)
        return None

    def sinks_down(self):
        """Bits of the Notify entries some store process fails to write."""
        mask = 0
        for number in range(self.slots):
            pid, kind, _i, _b, _s, _a, down = self.read(number)
            if pid and kind == "store":
                mask |= down
        return mask
