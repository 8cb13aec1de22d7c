"""Prometheus metrics summed over all workers.

prometheus_client's multiprocess mode keeps one small mmap file per process
in ``PROMETHEUS_MULTIPROC_DIR``; the supervisor creates that directory before
forking and ``/metrics`` in any worker reads all of them.

The request path never touches prometheus_client: it bumps plain integers in
``WorkerStats``, and ``sync`` (twice a second, and before every scrape)
moves the deltas into the shared counters. A labelled ``inc`` costs a lock
and a dict lookup, which per request would be a measurable share of the
~10 µs a tracked request costs.
"""
from bisect import bisect_left
import os

ENV_DIR = "PROMETHEUS_MULTIPROC_DIR"
# Request handling time inside the worker (parse, route, answer), seconds.
LATENCY_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001,
                   0.0025, 0.005, 0.01, 0.025, 0.1, float("inf"))
FLUSH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                 2.5, 5.0, float("inf"))


class WorkerStats:
    def __init__(self):
        self.requests = {}      # (route, status) -> count not yet synced
        self.latency = {}       # route -> [count per LATENCY_BUCKETS slot, sum]
        self.events = 0
        self.limited = {}       # route class -> requests refused with 429
        self.sink_written = {}
        self.sink_failed = {}
        self.flushes = []       # (sink, seconds) not yet synced
        self.gauges = lambda: (0, 0, 0)  # () -> (open connections, queued events, spool bytes)
        self.upstream = None    # () -> (open, idle) proxy upstream connections, with ProxyUrl
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

    # ---- batcher callbacks -----------------------------------------------
    def written(self, sink, n, seconds):
        self.sink_written[sink] = self.sink_written.get(sink, 0) + n
        self.flushes.append((sink, seconds))

    def failed(self, sink):
        self.sink_failed[sink] = self.sink_failed.get(sink, 0) + 1

    # ---- shared counters -------------------------------------------------
    def bind(self):
        """Create the prometheus metrics (in the worker, after the fork)."""
        from prometheus_client import Counter, Gauge, Histogram
        self._metrics = {
            "latency": Histogram("tracker_request_duration_seconds",
                                 "Time a worker spent on a request (parse to answer)",
                                 ["route"], buckets=LATENCY_BUCKETS),
            "limited": Counter("tracker_rate_limited_total",
                               "Requests refused with 429 by the rate limiter", ["route_class"]),
            "batches": Counter("tracker_batches_flushed_total",
                               "Batches written by a sink", ["sink"]),
            "flush": Histogram("tracker_batch_flush_seconds", "Time to write one batch",
                               ["sink"], buckets=FLUSH_BUCKETS),
            "connections": Gauge("tracker_open_connections", "Open client connections",
                                 multiprocess_mode="livesum"),
            "queue": Gauge("tracker_queue_events",
                           "Accepted events not yet written to every sink",
                           multiprocess_mode="livesum"),
            "spool": Gauge("tracker_spool_bytes", "Bytes in the workers' current spool files",
                           multiprocess_mode="livesum"),
            "upstream": Gauge("tracker_proxy_upstream_connections",
                              "Connections to ProxyUrl (open = all, idle = kept alive, unused)",
                              ["state"], multiprocess_mode="livesum"),
            "requests": Counter("tracker_requests_total", "HTTP requests answered",
                                ["route", "status"]),
            "events": Counter("tracker_events_total", "Events accepted (answered 2xx)"),
            "written": Counter("tracker_sink_events_written_total",
                               "Events written by a sink", ["sink"]),
            "failed": Counter("tracker_sink_write_failures_total",
                              "Failed batch writes (retried)", ["sink"]),
        }

    def sync(self):
        m = self._metrics
        if m is None:
            return
        requests, self.requests = self.requests, {}
        for (route, status), n in requests.items():
            m["requests"].labels(route, str(status)).inc(n)
        if self.events:
            m["events"].inc(self.events)
            self.events = 0
        for attr, name in (("sink_written", "written"), ("sink_failed", "failed"),
                           ("limited", "limited")):
            counts = getattr(self, attr)
            setattr(self, attr, {})
            for label, n in counts.items():
                m[name].labels(label).inc(n)
        latency, self.latency = self.latency, {}
        for route, slots in latency.items():
            histogram_add(m["latency"].labels(route), slots)
        flushes, self.flushes = self.flushes, []
        for sink, seconds in flushes:
            m["batches"].labels(sink).inc()
            m["flush"].labels(sink).observe(seconds)
        conns, queued, spooled = self.gauges()
        m["connections"].set(conns)
        m["queue"].set(queued)
        m["spool"].set(spooled)
        if self.upstream is not None:
            open_, idle = self.upstream()
            m["upstream"].labels("open").set(open_)
            m["upstream"].labels("idle").set(idle)


def histogram_add(child, slots):
    """Add pre-bucketed observations to a histogram child.

    prometheus_client has no bulk observe; its Histogram keeps one
    non-cumulative value per bucket (``_buckets``) plus ``_sum`` and
    cumulates at exposition, which is exactly what ``observe`` increments.
    Pinned prometheus-client version; tests/unit/test_metrics.py checks the
    exposition this produces.
    """
    for i, n in enumerate(slots[:-1]):
        if n:
            child._buckets[i].inc(n)
    child._sum.inc(slots[-1])


def exposition():
    """The text exposition of every worker's metrics."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return generate_latest(registry)


def prepare_dir(path):
    """Supervisor: a clean multiprocess directory, exported for the children."""
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        if name.endswith(".db"):
            os.unlink(os.path.join(path, name))
    os.environ[ENV_DIR] = path


def restart_counter():
    """Supervisor: counts workers that died and were respawned."""
    from prometheus_client import Counter
    return Counter("tracker_worker_restarts_total", "Workers respawned after dying")


def mark_dead(pid):
    from prometheus_client import multiprocess
    multiprocess.mark_process_dead(pid)
