"""The small interface every sink implements.

A sink is created in a store process (workers/store.py, after the fork) from
one ``Notify`` entry of the config. Its stage (engine/store/stage.py) calls
``write_batch`` from the process's event loop; a sink whose client library
blocks runs its work in an executor so the loop keeps reading the spool.

Contract:
- ``write_batch(batch)`` gets an ``engine.store.fanout.Batch``: a list of
  event dicts (engine/event.py), unique by eid, in spool order, whose
  ``rows`` ({table: {key: winning event}}) and ``counters`` ({table: {key:
  n}}) are the fan-out of DESIGN.md §3 — the same for every sink, built-in
  or plug-in. It either stores the whole batch or raises; the stage then
  retries the same batch later, and after a crash the spool replays it.
  Writes must therefore be idempotent by the event's ``eid`` for row tables
  (say how counters avoid double counts).
- ``start`` raises ``SinkUnavailable`` when the store cannot be reached.
- ``spans`` (optional, SQLite's): True when ``write_batch(batch, hold=True)``
  may leave a batch in an open transaction that later batches join, ended
  by ``await sink.commit()``; any failure rolls the whole transaction back.
  The channel (engine/store/batcher.py) then acknowledges held batches only
  at the commit, and writes them again after a rollback. ``span_events`` and
  ``span_age_ms`` bound what one transaction holds.
- ``multi_writer``: True when several processes may write the store at once
  (the spool is then shared out over the store processes); False (the
  default, and SQLite's) keeps the sink in store-0 alone.

Optional, for stores (SQLite, Cassandra) that keep bus messages: the NATS
consumer (workers/consume.py) calls ``await sink.write_messages(logs, counts,
updates)`` on every Notify sink that has it, with the store-neutral records of
engine/nats/messages.py: ``logs`` a list of log records (table ``logs``), ``counts``
a dict counter id -> n (``counters``: ``total = total + n``), ``updates`` a
list of update records (``updates``: the latest ``updated`` wins). It stores
the whole group or raises; a raised group is retried whole, so a store must
not apply part of it (one transaction, or say how counters avoid double counts).
"""


class SinkUnavailable(RuntimeError):
    """The store cannot be reached right now."""


class Sink:
    service = ""  # the Notify "Service" name
    # The Notify entry keys the sink reads, so a config check can name the
    # others (engine/entries.py); None: not declared, keys are not checked.
    entry_keys = None
    multi_writer = False

    def __init__(self, entry, config):
        """``entry`` is the Notify dict (with paths already resolved),
        ``config`` the whole loaded ``engine.config.Config``."""
        self.entry = entry
        self.config = config
        self.critical = bool(entry.get("Critical", False))

    def prepare(self):
        """Optional, run once in the supervisor before forking (create files,
        schema). Must leave no open connection behind: workers fork after it.
        Raise SinkUnavailable when the store cannot be prepared."""

    async def start(self):
        """Connect / open; raise SinkUnavailable when unreachable."""

    async def write_batch(self, batch):
        """Store a Batch (a list of event dicts with its fan-out); raise on failure."""
        raise NotImplementedError

    async def close(self):
        """Flush and release resources."""
