"""Prometheus metrics summed over all workers.

prometheus_client's multiprocess mode keeps one small mmap file per process
in ``PROMETHEUS_MULTIPROC_DIR``; the supervisor creates that directory before
forking and ``/metrics`` in any worker reads all of them.

The request path never touches prometheus_client: it bumps plain integers in
``WorkerStats``, and ``sync`` (twice a second, and before every scrape)
moves the deltas into the shared counters. A labelled ``inc`` costs a lock
and a dict lookup, which per request would be a measurable share of the
~10 µs a tracked request costs.

Request latency arrives the same way, pre-bucketed, and prometheus_client's
Histogram takes one observation per ``observe`` call, with no public way to add
a bucket's count at once. So ``BulkHistogram`` keeps the exact per-bucket
counts and the exact sum in two multiprocess Counters, and ``exposition``
folds them back into one ordinary histogram family (cumulative ``_bucket``,
``_count``, ``_sum``). Only public API is used, so a prometheus-client upgrade
cannot silently break the numbers; tests/unit/test_metrics.py checks the text
scraped from a real multiprocess directory written by several processes.

Who writes what: ``WorkerStats`` in the HTTP workers, ``StoreStats`` in the
store processes, ``SupervisorStats`` in the supervisor (CPU and memory per
role, kept by ``RoleUsage``; restarts; the CPU count and ServerMonthlyCost the
cost rules in deploy/prometheus/ divide by). docs/metrics.md lists them all.
"""
from bisect import bisect_left
import os
from typing import NamedTuple

from engine.system import procstat

ENV_DIR = "PROMETHEUS_MULTIPROC_DIR"
# Request handling time inside the worker (parse, route, answer), seconds.
LATENCY_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001,
                   0.0025, 0.005, 0.01, 0.025, 0.1, float("inf"))


class HistogramSpec(NamedTuple):
    name: str
    documentation: str
    labelnames: tuple
    buckets: tuple


REQUEST_DURATION = HistogramSpec("tracker_request_duration_seconds",
                                 "Time a worker spent on a request (parse to answer)",
                                 ("route",), LATENCY_BUCKETS)
BULK_HISTOGRAMS = (REQUEST_DURATION,)
FLUSH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                 2.5, 5.0, float("inf"))


class WorkerStats:
    def __init__(self):
        self.requests = {}      # (route, status) -> count not yet synced
        self.latency = {}       # route -> [count per LATENCY_BUCKETS slot, sum]
        self.events = 0
        self.limited = {}       # route class -> requests refused with 429
        self.accepted = 0       # connections accepted, not yet synced (ConnectionRegistry)
        self.gauges = lambda: (0, 0, 0)  # () -> (open connections, open-group events, spool bytes)
        self.spool_limit = 0    # SpoolMaxBytes: the spool bytes at which track routes stop
        self.ready = None       # () -> bool: whether /ready would answer 200
        self.upstream = None    # () -> (open, idle) proxy upstream connections, with ProxyUrl
        self.sources = []       # (stats) -> None: compiled counters drained into these
        self._metrics = None

    # ---- hot path --------------------------------------------------------
    def request(self, route, status):
        key = (route, status)
        self.requests[key] = self.requests.get(key, 0) + 1

    def answered(self, route, status, seconds):
        """One request done: count it and file its handling time."""
        key = (route, status)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        slots = self.latency.get(route)
        if slots is None:
            slots = self.latency[route] = [0] * len(LATENCY_BUCKETS) + [0.0]
        slots[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        slots[-1] += seconds

    def rate_limited(self, cls_name):
        self.limited[cls_name] = self.limited.get(cls_name, 0) + 1

    # ---- shared counters -------------------------------------------------
    def bind(self):
        """Create the prometheus metrics (in the worker, after the fork)."""
        from prometheus_client import Counter, Gauge
        self._metrics = {
            "latency": BulkHistogram(REQUEST_DURATION),
            "limited": Counter("tracker_rate_limited_total",
                               "Requests refused with 429 by the rate limiter", ["route_class"]),
            "connections": Gauge("tracker_open_connections", "Open client connections",
                                 multiprocess_mode="livesum"),
            "accepted": Counter("tracker_connections_accepted_total",
                                "Client connections accepted (public and AdminListen ports)"),
            "queue": Gauge("tracker_queue_events",
                           "Accepted events waiting for their spool group's write",
                           multiprocess_mode="livesum"),
            "spool": Gauge("tracker_spool_bytes",
                           "Bytes of the HTTP workers' spool files still on disk",
                           multiprocess_mode="livesum"),
            "spool_fill": Gauge("tracker_spool_fill_ratio",
                                "The fullest HTTP worker's spool bytes over SpoolMaxBytes "
                                "(track routes answer 503 from 0.9)",
                                multiprocess_mode="livemax"),
            "ready": Gauge("tracker_ready",
                           "1 while every serving HTTP worker would answer /ready with 200 "
                           "(draining ones left out), else 0",
                           multiprocess_mode="livemin"),
            "upstream": Gauge("tracker_proxy_upstream_connections",
                              "Connections to ProxyUrl (open = all, idle = kept alive, unused)",
                              ["state"], multiprocess_mode="livesum"),
            "requests": Counter("tracker_requests_total", "HTTP requests answered",
                                ["route", "status"]),
            "events": Counter("tracker_events_total", "Events accepted (answered 2xx)"),
        }

    def sync(self):
        m = self._metrics
        if m is None:
            return
        for drain in self.sources:
            drain(self)
        requests, self.requests = self.requests, {}
        for (route, status), n in requests.items():
            m["requests"].labels(route, str(status)).inc(n)
        if self.events:
            m["events"].inc(self.events)
            self.events = 0
        if self.accepted:
            m["accepted"].inc(self.accepted)
            self.accepted = 0
        for attr, name in (("limited", "limited"),):
            counts = getattr(self, attr)
            setattr(self, attr, {})
            for label, n in counts.items():
                m[name].labels(label).inc(n)
        latency, self.latency = self.latency, {}
        for route, slots in latency.items():
            m["latency"].add((route,), slots)
        conns, queued, spooled = self.gauges()
        m["connections"].set(conns)
        m["queue"].set(queued)
        m["spool"].set(spooled)
        if self.spool_limit:
            m["spool_fill"].set(spooled / self.spool_limit)
        if self.ready is not None:
            m["ready"].set(1 if self.ready() else 0)
        if self.upstream is not None:
            open_, idle = self.upstream()
            m["upstream"].labels("open").set(open_)
            m["upstream"].labels("idle").set(idle)


class StoreStats:
    """A store process's numbers: what each sink wrote or failed (from its
    SinkChannel), and its lag, moved into shared metrics every tick.

    Lag gauges are ``livesum``: each store process reports the files it
    reads for a sink (a sink shared out over several store processes sums
    to its total) and a dead process's share disappears with it."""

    def __init__(self):
        self.sink_written = {}
        self.sink_failed = {}
        self.sink_commits = {}
        self.flushes = []
        self.lag = {}           # sink -> (events, seconds), replaced every tick
        self._metrics = None

    def written(self, sink, n, seconds):
        self.sink_written[sink] = self.sink_written.get(sink, 0) + n
        self.flushes.append((sink, seconds))

    def failed(self, sink):
        self.sink_failed[sink] = self.sink_failed.get(sink, 0) + 1

    def committed(self, sink):
        """A transaction of a sink that spans them (SQLite) committed."""
        self.sink_commits[sink] = self.sink_commits.get(sink, 0) + 1

    def bind(self):
        from prometheus_client import Counter, Gauge, Histogram
        self._metrics = {
            "batches": Counter("tracker_batches_flushed_total",
                               "Batches written by a sink", ["sink"]),
            "flush": Histogram("tracker_batch_flush_seconds", "Time to write one batch",
                               ["sink"], buckets=FLUSH_BUCKETS),
            "written": Counter("tracker_sink_events_written_total",
                               "Events written by a sink", ["sink"]),
            "failed": Counter("tracker_sink_write_failures_total",
                              "Failed batch writes (retried)", ["sink"]),
            "commits": Counter("tracker_sink_transactions_total",
                               "Transactions committed by a sink whose full batches may "
                               "share one (SQLite)", ["sink"]),
            "lag_events": Gauge("tracker_sink_lag_events",
                                "Events in the spool not yet written by a sink",
                                ["sink"], multiprocess_mode="livesum"),
            "lag_seconds": Gauge("tracker_sink_lag_seconds",
                                 "Age of the oldest event in the spool not yet written "
                                 "by a sink", ["sink"], multiprocess_mode="livemax"),
        }

    def sync(self):
        m = self._metrics
        if m is None:
            return
        for attr, name in (("sink_written", "written"), ("sink_failed", "failed"),
                           ("sink_commits", "commits")):
            counts = getattr(self, attr)
            setattr(self, attr, {})
            for label, n in counts.items():
                m[name].labels(label).inc(n)
        flushes, self.flushes = self.flushes, []
        for sink, seconds in flushes:
            m["batches"].labels(sink).inc()
            m["flush"].labels(sink).observe(seconds)
        for sink, (events, seconds) in self.lag.items():
            m["lag_events"].labels(sink).set(events)
            m["lag_seconds"].labels(sink).set(seconds)


ROLES = ("supervisor", "http", "store", "consume", "acme")


class RoleUsage:
    """CPU seconds and resident memory per role, summed over the role's
    processes: the supervisor keeps this account for every child it forks
    (and itself), since prometheus_client's process collector sees only the
    process it runs in.

    A live process's CPU is read from /proc (``read_cpu``); a reaped one's
    final figure comes from its rusage (``os.wait4``) and moves into
    ``exited``, so a respawned worker never takes CPU off its role. Each
    process's figure only ever rises (the larger of what /proc last showed
    and the rusage), so the per-role total never decreases."""

    def __init__(self, read_cpu=procstat.cpu_seconds, read_rss=procstat.resident_bytes):
        self.read_cpu = read_cpu
        self.read_rss = read_rss
        self.live = {}       # pid -> [role, CPU seconds last seen]
        self.exited = {}     # role -> CPU seconds of its reaped processes

    def started(self, pid, role):
        self.live[pid] = [role, 0.0]
        self.exited.setdefault(role, 0.0)

    def reaped(self, pid, cpu_seconds):
        entry = self.live.pop(pid, None)
        if entry is not None:
            role, seen = entry
            self.exited[role] += max(seen, cpu_seconds)

    def totals(self):
        """(role -> CPU seconds so far, role -> resident bytes of its live processes)."""
        cpu, rss = dict(self.exited), dict.fromkeys(self.exited, 0)
        for pid, entry in self.live.items():
            now = self.read_cpu(pid)
            if now is not None and now > entry[1]:
                entry[1] = now
            cpu[entry[0]] += entry[1]
            rss[entry[0]] += self.read_rss(pid) or 0
        return cpu, rss


class SupervisorStats:
    """What the supervisor publishes: CPU and memory per role (``RoleUsage``),
    worker restarts, and the node's facts the cost rules divide by: the CPU
    count it may use and, when configured, its monthly price.

    The supervisor lives as long as the multiprocess directory, so its own
    counter file holds the CPU counter: no worker's death can take from it,
    and whichever worker answers /metrics reads it."""

    def __init__(self, usage=None):
        self.usage = usage or RoleUsage()
        self.published = {}   # role -> CPU seconds already added to the counter
        self._metrics = None

    def bind(self):
        from prometheus_client import Counter, Gauge
        self._metrics = {
            "restarts": Counter("tracker_worker_restarts_total", "Workers respawned after dying"),
            "cpu": Counter("tracker_process_cpu_seconds_total",
                           "User and system CPU seconds of all processes of a role, "
                           "exited ones included", ["role"]),
            "rss": Gauge("tracker_process_resident_memory_bytes",
                         "Resident memory of the live processes of a role (shared pages "
                         "count in every process)", ["role"], multiprocess_mode="livesum"),
            "cpus": Gauge("tracker_cpus", "CPUs this node may use (what Workers 0 forks)",
                          multiprocess_mode="livemax"),
        }
        self.cost = None      # created once ServerMonthlyCost is set: unset means no series

    def configured(self, cpus, monthly_cost):
        """At start and after every reload."""
        self._metrics["cpus"].set(cpus)
        if monthly_cost and self.cost is None:
            from prometheus_client import Gauge
            self.cost = Gauge("tracker_server_monthly_cost_dollars",
                              "ServerMonthlyCost: what this node costs per month, USD",
                              multiprocess_mode="livemax")
        if self.cost is not None:
            self.cost.set(monthly_cost)   # 0 after a reload that unset it: rules skip it

    def restarted(self):
        self._metrics["restarts"].inc()

    def sync(self):
        cpu, rss = self.usage.totals()
        for role, seconds in cpu.items():
            delta = seconds - self.published.get(role, 0.0)
            if delta > 0 or role not in self.published:
                self._metrics["cpu"].labels(role).inc(max(delta, 0.0))
                self.published[role] = max(seconds, self.published.get(role, 0.0))
            self._metrics["rss"].labels(role).set(rss[role])


# Sample names of the two counters behind a BulkHistogram; never exposed as such.
_SLOT, _SLOT_SUM = "_slot", "_slotsum"


def _le(bound):
    return "+Inf" if bound == float("inf") else repr(float(bound))


class BulkHistogram:
    """A histogram fed a whole bucket at a time: ``add(labels, slots)`` with
    ``slots`` = one (non-cumulative) count per bucket of ``spec.buckets``,
    then the sum of the observed values. Stored as a Counter per bucket
    (label ``le``) and a Counter of the sum; ``exposition`` shows them as the
    histogram ``spec.name``."""

    def __init__(self, spec):
        from prometheus_client import Counter
        self.les = [_le(b) for b in spec.buckets]
        self.counts = Counter(spec.name + _SLOT, "Per-bucket counts of " + spec.name,
                              [*spec.labelnames, "le"])
        self.sums = Counter(spec.name + _SLOT_SUM, "Sum of " + spec.name, spec.labelnames)
        self.children = {}   # label values -> ([bucket counter children], sum child)

    def add(self, labels, slots):
        children = self.children.get(labels)
        if children is None:   # labels() costs a lock and a lookup: once per label set
            children = self.children[labels] = (
                [self.counts.labels(*labels, le) for le in self.les], self.sums.labels(*labels))
        buckets, total = children
        for child, n in zip(buckets, slots):
            if n:
                child.inc(n)
        total.inc(slots[-1])


class _Folded:
    """The multiprocess collector's families, with each BulkHistogram's two
    counters replaced by the histogram they stand for."""

    def __init__(self, specs=BULK_HISTOGRAMS, path=None):
        from prometheus_client.multiprocess import MultiProcessCollector
        self.inner = MultiProcessCollector(None, path)
        self.path = path or os.environ[ENV_DIR]
        self.specs = specs

    def files(self):
        """The processes' files, less any still empty: a process creating its
        file opens it before it sizes it, and reading it then fails the whole
        scrape (a worker booting after a kill or during a reload)."""
        found = []
        for entry in os.scandir(self.path):
            if entry.name.endswith(".db"):
                try:
                    if entry.stat().st_size > 0:
                        found.append(entry.path)
                except FileNotFoundError:   # a dead process's live gauges, just removed
                    pass
        return found

    def collect(self):
        own = {spec.name + part for spec in self.specs for part in (_SLOT, _SLOT_SUM)}
        held = {}
        for metric in self.inner.merge(self.files(), accumulate=True):
            if metric.name in own:
                held[metric.name] = metric.samples
            else:
                yield metric
        for spec in self.specs:
            counts, sums = held.get(spec.name + _SLOT), held.get(spec.name + _SLOT_SUM)
            if counts or sums:
                yield fold_histogram(spec, counts or [], sums or [])


def fold_histogram(spec, count_samples, sum_samples):
    """A HistogramMetricFamily from per-bucket count samples (label ``le``)
    and sum samples, both already summed over processes."""
    from prometheus_client.core import HistogramMetricFamily
    counts, sums = {}, {}
    for sample in count_samples:
        key = tuple(sample.labels[n] for n in spec.labelnames)
        counts.setdefault(key, {})[sample.labels["le"]] = sample.value
    for sample in sum_samples:
        sums[tuple(sample.labels[n] for n in spec.labelnames)] = sample.value
    family = HistogramMetricFamily(spec.name, spec.documentation, labels=spec.labelnames)
    for key in sorted(set(counts) | set(sums)):
        per_le, total, buckets = counts.get(key, {}), 0.0, []
        for bound in spec.buckets:
            total += per_le.get(_le(bound), 0.0)
            buckets.append((_le(bound), total))
        family.add_metric(key, buckets, sums.get(key, 0.0))
    return family


def exposition(path=None):
    """The text exposition of every worker's metrics (``path``: the
    multiprocess directory, default ``PROMETHEUS_MULTIPROC_DIR``)."""
    from prometheus_client import CollectorRegistry, generate_latest
    registry = CollectorRegistry()
    registry.register(_Folded(path=path))
    return generate_latest(registry)


def prepare_dir(path):
    """Supervisor: a clean multiprocess directory, exported for the children."""
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        if name.endswith(".db"):
            os.unlink(os.path.join(path, name))
    os.environ[ENV_DIR] = path


def mark_dead(pid):
    from prometheus_client import multiprocess
    multiprocess.mark_process_dead(pid)
