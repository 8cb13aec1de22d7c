"""The cyclic garbage collector's and the object allocator's settings in
worker processes.

Why: the hot paths allocate many short-lived containers (a batch's event
dicts, its fan-out, a Cassandra plan's writes) that reference counting alone
frees; CPython's default thresholds (700, 10, 10) still run a young
collection every 700 allocations and, every hundred of those, a full one
that walks the whole heap. Profiled with py-spy in bench_cassandra's
in-process sink run (issue 17's mix; its heap also held the 20,000 test
events): 20 % of the main thread was ``gc_collect_main``, ~44 µs per event,
most of it full collections of ~57 ms. docs/storage.md has the before/after
in running collectors.

So, after the fork:
- ``gc.freeze()``, at once and again ``BOOTED_SECONDS`` later: what the
  worker inherited and built while booting (modules, the config, the app,
  the sinks and their drivers) moves to the permanent generation; no
  collection walks it again, and none writes to the inherited pages
  (copy-on-write stays shared with the supervisor). Frozen objects are
  still freed by reference counting; only a frozen cycle would stay;
- batch roles (store, consume) collect the young generation every
  ``BATCH_GEN0`` allocations and the old ones rarely: a young collection
  then takes a few ms, which a batch does not notice;
- batch roles also keep up to ``BATCH_ARENA_BYTES`` of the object arenas a
  freed batch empties, for the next batch (engine/system/_arenas.pyx: the
  interpreter unmaps them, and the kernel zeroes every page again when the
  next batch maps them);
- request roles (http, acme) keep the default young threshold, so no
  collection adds more than a fraction of a millisecond to one answer.

``TRACKER_GC=python`` leaves every default in place, ``TRACKER_ARENAS=python``
the interpreter's arena allocator (the benchmarks' A/B).
"""
import gc
import os

from engine.system import _arenas

BOOTED_SECONDS = 10.0
BATCH_GEN0 = 50_000
BATCH_THRESHOLDS = (BATCH_GEN0, 20, 100)
BATCH_ROLES = ("store", "consume")
# 20,000 decoded events take ~41 MiB of arenas: room for the fan-out and the next batch.
BATCH_ARENA_BYTES = 256 << 20


def tune(role, loop=None):
    """Apply the settings for ``role`` ("store-0", "http-1", ...), the second
    freeze scheduled on ``loop``; returns the thresholds in force."""
    batch = role.split("-", 1)[0] in BATCH_ROLES
    if batch and os.environ.get("TRACKER_ARENAS") != "python":
        _arenas.keep(BATCH_ARENA_BYTES)
    if os.environ.get("TRACKER_GC") == "python":
        return gc.get_threshold()
    gc.freeze()
    if loop is not None:
        loop.call_later(BOOTED_SECONDS, gc.freeze)
    if batch:
        gc.set_threshold(*BATCH_THRESHOLDS)
    return gc.get_threshold()
