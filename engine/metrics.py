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
import os

ENV_DIR = "PROMETHEUS_MULTIPROC_DIR"


class WorkerStats:
    def __init__(self):
        self.requests = {}      # (route, status) -> count not yet synced
        self.events = 0
        self.sink_written = {}
        self.sink_failed = {}
        self._metrics = None

    # ---- hot path --------------------------------------------------------
    def request(self, route, status):
        key = (route, status)
        self.requests[key] = self.requests.get(key, 0) + 1

    # ---- batcher callbacks -----------------------------------------------
    def written(self, sink, n):
        self.sink_written[sink] = self.sink_written.get(sink, 0) + n

    def failed(self, sink):
        self.sink_failed[sink] = self.sink_failed.get(sink, 0) + 1

    # ---- shared counters -------------------------------------------------
    def bind(self):
        """Create the prometheus metrics (in the worker, after the fork)."""
        from prometheus_client import Counter
        self._metrics = {
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
        for attr, name in (("sink_written", "written"), ("sink_failed", "failed")):
            counts = getattr(self, attr)
            setattr(self, attr, {})
            for sink, n in counts.items():
                m[name].labels(sink).inc(n)


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


def mark_dead(pid):
    from prometheus_client import multiprocess
    multiprocess.mark_process_dead(pid)
