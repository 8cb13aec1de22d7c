"""engine.metrics: what /metrics shows, scraped from a real multiprocess directory.

Each "worker" is a separate Python process with PROMETHEUS_MULTIPROC_DIR set
(prometheus_client picks its multiprocess storage at import, so the mode
cannot be switched inside this test process); it counts requests the way the
HTTP worker does (``WorkerStats.answered``) and syncs them into the shared
files. The test then reads the directory with ``exposition`` and parses the
text with prometheus_client's own parser.
"""
import json
import os
import subprocess
import sys
from bisect import bisect_left

import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine.metrics import FLUSH_BUCKETS, LATENCY_BUCKETS, exposition

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

WORKER = """
import json, sys
from engine.metrics import StoreStats, WorkerStats
syncs = json.loads(sys.argv[1])
stats, store = WorkerStats(), StoreStats()     # an HTTP worker's and a store's numbers
stats.bind()
store.bind()
for answers in syncs:                      # several syncs: each one adds its deltas
    for route, seconds in answers:
        stats.answered(route, 200, seconds)
    store.written("sqlite", len(answers), 0.003)
    store.lag["sqlite"] = (len(answers), 0.25 * len(answers))
    stats.sync()
    store.sync()
"""

# Per worker, per sync: (route, seconds). Values on a bound (1e-05, 0.001)
# belong to that bound's bucket (le is inclusive); 0.5 only to +Inf.
WORKERS = [
    [[("track", 0.000005), ("track", 0.00003), ("track", 0.00003), ("ping", 0.00001)],
     [("track", 0.002), ("track", 0.5)]],
    [[("track", 0.00002), ("track", 0.001), ("ping", 0.0002)]],
]


def run_worker(directory, syncs):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory),
           "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    subprocess.run([sys.executable, "-c", WORKER, json.dumps(syncs)], env=env, check=True,
                   timeout=60)


@pytest.fixture(scope="module")
def scraped(tmp_path_factory):
    directory = tmp_path_factory.mktemp("metrics")
    for syncs in WORKERS:
        run_worker(directory, syncs)
    text = exposition(str(directory)).decode()
    return text, {f.name: f for f in text_string_to_metric_families(text)}


def expected_latency(route):
    seconds = [s for syncs in WORKERS for answers in syncs for r, s in answers if r == route]
    per_bucket = [0] * len(LATENCY_BUCKETS)
    for s in seconds:
        per_bucket[bisect_left(LATENCY_BUCKETS, s)] += 1
    return per_bucket, sum(seconds), len(seconds)


def samples_of(family, route_label, route):
    buckets, count, total = {}, None, None
    for s in family.samples:
        if s.labels.get(route_label) != route:
            continue
        if s.name.endswith("_bucket"):
            buckets[float(s.labels["le"])] = s.value
        elif s.name.endswith("_count"):
            count = s.value
        elif s.name.endswith("_sum"):
            total = s.value
    return buckets, count, total


@pytest.mark.parametrize("route", ["track", "ping"])
def test_request_latency_is_one_cumulative_histogram_over_all_workers(scraped, route):
    _, families = scraped
    family = families["tracker_request_duration_seconds"]
    assert family.type == "histogram"
    buckets, count, total = samples_of(family, "route", route)
    per_bucket, want_sum, want_count = expected_latency(route)
    assert sorted(buckets) == sorted(LATENCY_BUCKETS)        # every bucket, +Inf included
    running = 0
    for bound, n in zip(LATENCY_BUCKETS, per_bucket):
        running += n
        assert buckets[bound] == running, bound               # cumulative, exact
    assert count == want_count == buckets[float("inf")]
    assert total == pytest.approx(want_sum, rel=1e-12)


def test_histogram_values_match_what_observe_would_give(scraped):
    # A bucket edge is inclusive, as in prometheus_client's own Histogram.
    _, families = scraped
    buckets, _, _ = samples_of(families["tracker_request_duration_seconds"], "route", "ping")
    assert buckets[0.00001] == 1 and buckets[0.000025] == 1 and buckets[0.00025] == 2


def test_the_storage_counters_are_not_exposed(scraped):
    text, families = scraped
    assert "_slot" not in text
    assert all(not name.startswith("tracker_request_duration_seconds_")
               for name in families)


def test_observed_histograms_and_counters_still_merge(scraped):
    _, families = scraped
    requests = {s.labels["route"]: s.value for s in families["tracker_requests"].samples
                if s.name == "tracker_requests_total"}
    assert requests == {"track": 7, "ping": 2}
    flush = families["tracker_batch_flush_seconds"]
    buckets, count, total = samples_of(flush, "sink", "sqlite")
    assert count == 3 and total == pytest.approx(0.009)     # three syncs, one flush each
    assert buckets[0.0025] == 0 and buckets[0.005] == 3 and sorted(buckets) == sorted(FLUSH_BUCKETS)


def test_sink_lag_sums_events_and_keeps_the_oldest_age_over_store_processes(scraped):
    # each process's last values: (2 events, 0.5 s) and (3 events, 0.75 s)
    _, families = scraped
    [events] = families["tracker_sink_lag_events"].samples
    [seconds] = families["tracker_sink_lag_seconds"].samples
    assert events.labels["sink"] == "sqlite" and events.value == 5
    assert seconds.value == 0.75


def test_a_file_a_booting_process_has_not_sized_yet_is_skipped(tmp_path):
    """prometheus_client creates a process's file empty, then sizes it: a
    scrape in between (a worker respawning, a reload) still answers."""
    run_worker(tmp_path, WORKERS[1])
    before = exposition(str(tmp_path))
    (tmp_path / "counter_4194000.db").touch()
    (tmp_path / "gauge_livesum_4194000.db").touch()
    assert exposition(str(tmp_path)) == before
    assert b"tracker_requests_total" in before
