"""A batch as Cassandra requests, one partition each.

``Planner.plan(batch)`` turns fan_out's ``Batch`` (engine/store/fanout.py: the
events, the winning event per row key, the counter increments per key) into
``Request``s. Every write goes with the other writes to its *partition*: the
same partition key value, whatever the table. visitors, sessions, nodes,
locations, aliases, referrals and affiliates are all partitioned by ``vid``,
so what one batch writes about a visitor there is one partition; dailies and
ips are both partitioned by ``ip``. A request carries one partition only:

- rows: an UNLOGGED batch of that partition's inserts. Cassandra applies a
  single-partition batch as one mutation (atomic, isolated, one commit-log
  entry, no batch log), and the driver routes it to a replica by its
  partition key (token-aware);
- counters: a COUNTER batch of that partition's increments, coalesced per key
  (``total = total + n`` once per key and batch);
- conditional inserts (``FirstWrite: "paxos"``) go one per request: a
  condition in a batch would gate every write of the batch.

A partition's writes split over several requests beyond ``max_statements``
writes or about ``max_bytes`` of values (Cassandra logs every batch over its
``batch_size_warn_threshold``, 5 KiB, counted with per-cell overhead).

Writes that cannot change anything are not sent. Within a batch, fan_out
already keeps one winner per row key. Across batches, ``Settled`` remembers
the write timestamp of earliest-wins rows this process has had confirmed: a
later event's insert into such a row would lose every cell to it, so it is
left out. (A row deleted since then stays deleted either way: a plain DELETE
carries a wall-clock timestamp, above every earliest-wins stamp.)

Values are built by a driver's ``codec`` (engine/store/sinks/cassandra/
wire_*.py): ``uuid(text)``, ``ts(ms)``, ``day("YYYY-MM-DD")``, ``point((lat,
lon))``, ``view((w, h))``; None is a null.
"""
from engine.event import COLUMNS, FIELD_TYPES, LATLON, UUID, VIEWPORT
from engine.store.fanout import EARLIEST, fan_out
from engine.store.sinks.cassandra.cql import COUNTER_TABLES, ROW_TABLES
from engine.store.sinks.cassandra.stamps import both_ts

MAX_STATEMENTS = 16          # writes per request (RowBatch)
MAX_BYTES = 4096             # estimated values per request, see _size
CELL_OVERHEAD = 24           # per bound value: a cell's timestamp, TTL, deletion time, flags
SETTLED_LIMIT = 100_000      # earliest-wins rows remembered (then forgotten all at once)

# Partition key columns where they are not the first key column.
COMPOSITE_PARTITIONS = {"events": ("vid", "sid"), "browsers": ("browser", "bhash"),
                        "outcomes": ("outcome", "sink")}


class Write:
    """One statement: ``table`` names the prepared statement; ``values`` are
    in its bind order, or (``sparse``) a list of (index, value) of the values
    set, every other one unset. ``origin`` is what the sink needs back:
    (table, key, n) of a counter increment, (table, key, stamp) of an
    earliest-wins row, else None."""
    __slots__ = ("table", "values", "sparse", "size", "origin")

    def __init__(self, table, values, size, sparse=False, origin=None):
        self.table, self.values, self.size = table, values, size
        self.sparse, self.origin = sparse, origin


class Request:
    """The writes of one partition (``partition``: see ``partition_of``)
    sent as one request."""
    __slots__ = ("partition", "counter", "conditional", "writes")

    def __init__(self, partition, writes, counter=False, conditional=False):
        self.partition, self.writes = partition, writes
        self.counter, self.conditional = counter, conditional


class Plan:
    """What a batch sends: ``rows`` and ``counters`` requests, the number of
    events and of partitions (rows and counters) they write."""
    __slots__ = ("rows", "counters", "events", "partitions")

    def __init__(self, rows, counters, events, partitions):
        self.rows, self.counters, self.events, self.partitions = rows, counters, events, partitions

    @property
    def statements(self):
        return sum(len(r.writes) for r in self.rows) + sum(len(r.writes) for r in self.counters)


def _size(values):
    """Estimated bytes of a write in a batch: text lengths plus a fixed
    overhead per bound value (a null is a cell too)."""
    n = CELL_OVERHEAD * len(values)
    for v in values:
        if type(v) is str:
            n += len(v)
        elif type(v) is dict:
            n += sum(len(k) + len(str(x)) for k, x in v.items())
    return n


def partition_of(table, key):
    """The partition identity of a row or counter key of ``table``: equal
    for writes Cassandra stores under the same partition key (same type and
    value), whatever the table."""
    cols = COMPOSITE_PARTITIONS.get(table)
    if cols is not None:
        return (table,) + tuple(key[:len(cols)])
    return ("uuid" if table in _VID_TABLES else "text", key[0])


_VID_TABLES = frozenset(t.name for t in ROW_TABLES if t.key[0] == "vid") | {"reqs"}


def first_column_partition(table):
    """partition_of(table, key) is (this, key[0]) for every key of ``table``;
    None when its partition key has more columns than the first."""
    part = partition_of(table, ("k", "k", "k", "k"))
    return part[0] if part[1:] == ("k",) else None


_COUNTER_PARTITION_KINDS = {t: first_column_partition(t) for t in COUNTER_TABLES}


class Settled:
    """Earliest-wins rows this process has had written: ``tables`` {table:
    {key: the write timestamp that holds the row}}. A later event's row (a
    smaller stamp) would lose every cell, so it need not be sent
    (``Planner._row_writes`` compares, inline: it is the plan's innermost
    loop, and a dict per table spares it a (table, key) tuple per row)."""

    def __init__(self, limit=SETTLED_LIMIT):
        self.limit = limit
        self.tables = {}
        self.count = 0

    def confirm(self, origins):
        """Rows Cassandra confirmed: [(table, key, stamp)]."""
        tables = self.tables
        if self.count + len(origins) > self.limit:
            tables.clear()
            self.count = 0
        for table, key, stamp in origins:
            stamps = tables.get(table)
            if stamps is None:
                stamps = tables[table] = {}
            held = stamps.get(key)
            if held is None:
                stamps[key] = stamp
                self.count += 1
            elif stamp > held:
                stamps[key] = stamp


class Group:
    """The writes of one partition (``part``: see ``partition_of``) and
    their estimated bytes: what ``_split`` makes requests of (made by
    ``_group``)."""
    __slots__ = ("part", "writes", "size")


class EventFacts:
    """What the plan takes once per event for all its rows: the length of
    its text and (on first use) its two write stamps (``stamps.both_ts``)."""
    __slots__ = ("text", "both")

    def __init__(self, text):
        self.text, self.both = text, None


class Planner:
    """Plans batches for one driver's ``codec``. Per row the work is one list
    of the winner's values and a conversion of the few columns whose type
    needs one (timestamps, lat/lon, viewport; uuids unless the codec binds
    their text; none the codec names ``as_decoded``); per event the text
    size and write stamps are taken once."""

    def __init__(self, codec, paxos=False, max_statements=MAX_STATEMENTS, max_bytes=MAX_BYTES):
        self.codec = codec
        self.paxos = paxos
        self.max_statements = max_statements
        self.max_bytes = max_bytes
        self.settled = None if paxos else Settled()
        self._event_conv = {col: (i, self._converter(col)) for i, col in enumerate(COLUMNS)}
        self._rows = [self._row_spec(t) for t in ROW_TABLES]

    def _converter(self, column):
        c = self.codec
        if column in getattr(c, "as_decoded", ()):
            return None
        if column == "created":
            return c.ts
        kind = FIELD_TYPES.get(column)
        if kind == UUID:
            return None if getattr(c, "uuid_as_text", False) else c.uuid
        if kind == LATLON:
            return c.point
        if kind == VIEWPORT:
            return c.view
        if column == "params":
            return _params
        return None

    def _row_spec(self, t):
        fixes = tuple((i, f) for i, f in enumerate(map(self._converter, t.cols)) if f is not None)
        kind = first_column_partition(t.name)
        if kind is None:                   # _row_writes builds (kind, key[0]) itself
            raise ValueError(f"{t.name}: a row table partitioned by more than its first column")
        return (t, t.cols[len(t.key) + 2:], fixes, t.keep == EARLIEST, kind)

    # ---- the plan -----------------------------------------------------------
    def plan(self, events):
        batch = fan_out(events)
        info = {}                 # eid -> EventFacts (fan_out left one event per eid)
        sessions = {}             # ("events", vid, sid) -> Group of its events inserts
        for ev in batch:
            w, text = self._event_write(ev)
            info[ev["eid"]] = EventFacts(text)
            _add(sessions, ("events", ev["vid"], ev["sid"]), w)
        # Row and counter partitions keyed by their first key column's value,
        # one dict per kind: a str key, no (kind, value) tuple per write.
        rows = {"uuid": {}, "text": {}}
        conditional = []          # [(partition, Write)]
        for spec in self._rows:
            self._row_writes(spec, batch.rows[spec[0].name], rows[spec[4]], info, conditional)
        counters, composite = {"uuid": {}, "text": {}}, {}
        for table, increments in batch.counters.items():
            kind = _COUNTER_PARTITION_KINDS.get(table)
            for key, n in increments.items():
                w = self._counter_write(table, key, n)
                if kind is None:
                    _add(composite, partition_of(table, key), w)
                else:
                    _add_first(counters[kind], kind, key[0], w)
        row_groups = [*sessions.values(), *rows["uuid"].values(), *rows["text"].values()]
        counter_groups = [*counters["uuid"].values(), *counters["text"].values(),
                          *composite.values()]
        requests = self._split(row_groups, False) + [Request(part, [w], conditional=True)
                                                     for part, w in conditional]
        return Plan(requests, self._split(counter_groups, True), len(batch),
                    len(row_groups) + len(conditional) + len(counter_groups))

    def _event_write(self, ev):
        """The ``events`` insert: the event's own fields, nothing else written
        (an unset value leaves no cell, a null would leave a tombstone); and
        the length of the event's text."""
        conv = self._event_conv
        pairs, size = [], 0
        for col, value in ev.items():
            spec = conv.get(col)
            if spec is None:
                continue
            if type(value) is str:
                size += len(value)
            if spec[1] is not None:
                value = spec[1](value)
                if value is None:
                    continue
            pairs.append((spec[0], value))
        return _write("events", pairs, size + CELL_OVERHEAD * len(pairs), True, None), size

    def _row_writes(self, spec, winners, groups, info, conditional):
        # The plan's innermost loop (a write per row table an event wins):
        # the settled check is inlined.
        t, rest, fixes, earliest, kind = spec
        name = t.name
        held = None
        if earliest and self.settled is not None:
            held = self.settled.tables.get(name)
        lwt = self.paxos and earliest
        which = 0 if earliest else 1
        overhead = CELL_OVERHEAD * (len(t.cols) + 1)
        width = 2 + len(rest) + (0 if lwt else 1)       # after the key
        for key, ev in winners.items():
            facts = info[ev["eid"]]
            both = facts.both
            if both is None:
                both = facts.both = both_ts(ev["created"], ev["eid"])
            stamp = both[which]
            if held is not None:
                old = held.get(key)
                if old is not None and old > stamp:
                    continue
            # key, created, eid, the rest, the stamp (unless lwt): set one by
            # one in a list of its final length (compiled, each ev.get is a C
            # call on a dict, and the list is never grown)
            nk = len(key)
            values = [None] * (nk + width)
            for i in range(nk):
                values[i] = key[i]
            values[nk] = ev["created"]
            values[nk + 1] = ev["eid"]
            j = nk + 2
            for col in rest:
                values[j] = ev.get(col)
                j += 1
            for i, f in fixes:
                v = values[i]
                if v is not None:
                    values[i] = f(v)
            # the event's text bounds the row's (_split counts exactly when it matters)
            size = facts.text + overhead
            if lwt:
                conditional.append(((kind, key[0]), _write(name, values, size, False, None)))
                continue
            values[j] = stamp
            _add_first(groups, kind, key[0],
                       _write(name, values, size, False, (name, key, stamp) if earliest else None))

    def _counter_write(self, table, key, n):
        c = self.codec
        if table == "dailies":
            values = [n, key[0], c.day(key[1])]
        elif table == "reqs":
            values = [n, c.uuid(key[0])]
        elif table == "outcomes":
            values = [n, key[0], key[1], key[2], c.day(key[3])]
        else:
            values = [n, *key]
        return _write(table, values, _size(key) + CELL_OVERHEAD, False, (table, key, n))

    def _split(self, groups, counter):
        out, most, budget = [], self.max_statements, self.max_bytes
        for g in groups:
            part, writes = g.part, g.writes
            if len(writes) <= most and g.size <= budget:
                out.append(_request(part, writes, counter))
                continue
            for w in writes:
                if not w.sparse:
                    w.size = _size(w.values)
            chunk, size = [], 0
            for w in writes:
                if chunk and (len(chunk) >= most or size + w.size > budget):
                    out.append(_request(part, chunk, counter))
                    chunk, size = [], 0
                chunk.append(w)
                size += w.size
            out.append(_request(part, chunk, counter))
        return out

    def row_requests(self, writes):
        """Requests for [(partition, Write)] of rows outside a batch of events
        (NATS log and update messages)."""
        groups = {}
        for part, write in writes:
            _add(groups, part, write)
        return self._split(list(groups.values()), False)

    def counter_requests(self, increments):
        """Requests for {(table, key): n} (a counter residue, NATS counts)."""
        groups = {}
        for (table, key), n in increments.items():
            _add(groups, partition_of(table, key), self._counter_write(table, key, n))
        return self._split(list(groups.values()), True)


def _add(groups, part, write):
    """``write`` into the Group of ``part`` in ``groups`` (keyed by part)."""
    g = groups.get(part)
    if g is None:
        groups[part] = _group(part, write)
    else:
        g.writes.append(write)
        g.size += write.size


def _add_first(groups, kind, first, write):
    """_add for a partition known by its kind and first key column's value,
    ``groups`` keyed by that value (a str: no (kind, value) tuple per write)."""
    g = groups.get(first)
    if g is None:
        groups[first] = _group((kind, first), write)
    else:
        g.writes.append(write)
        g.size += write.size


# The plan makes ~10 writes, and their requests and groups, per event: built
# here without a class call's argument parsing (compiled, a bare allocation).
def _write(table, values, size, sparse, origin):
    w = Write.__new__(Write)
    w.table, w.values, w.size, w.sparse, w.origin = table, values, size, sparse, origin
    return w


def _request(part, writes, counter):
    r = Request.__new__(Request)
    r.partition, r.writes, r.counter, r.conditional = part, writes, counter, False
    return r


def _group(part, write):
    g = Group.__new__(Group)
    g.part, g.writes, g.size = part, [write], write.size
    return g


def _params(value):
    return value or None


