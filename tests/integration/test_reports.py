"""`tracker report` against a real collector fed over HTTP with a known truth.

The corpus (report_corpus.py) is sent as single-event POSTs to a running
`tracker serve`; once the store holds every event, the CLI runs as a user
runs it and its counts must equal the truth, its rates, uplift, CI and
p-values an independent computation here (statistics.NormalDist, not the
engine's erfc and chi-square series)."""
import json
import math
import statistics
import subprocess
import uuid
from statistics import NormalDist

import pytest

from conftest import TRACKER, wait_for
from report_corpus import send_phases, stored_experiment

Z = NormalDist().inv_cdf(0.975)


def report(collector, kind, *args):
    out = subprocess.run([TRACKER, "report", kind, "--config", collector.config_path, *args],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def report_json(collector, kind, *args):
    return json.loads(report(collector, kind, "--json", *args))


def stored(collector):
    return collector.rows("SELECT count(*) AS n FROM ev")[0]["n"]


def wait_stored(collector, n):
    assert wait_for(lambda: stored(collector) >= n, timeout=60), (stored(collector), n)
    assert stored(collector) == n


@pytest.fixture(scope="module")
def experiment_collector(tmp_path_factory):
    c, truth = stored_experiment(tmp_path_factory.mktemp("reports"))
    yield c, truth
    c.stop()


def expected_split(x0, n0, x1, n1):
    """Rate, relative uplift, its 95 % CI (log rate ratio) and the pooled
    two-proportion z-test's two-sided p, written out from the textbook."""
    p0, p1 = x0 / n0, x1 / n1
    pooled = (x0 + x1) / (n0 + n1)
    z = (p1 - p0) / math.sqrt(pooled * (1 - pooled) * (1 / n0 + 1 / n1))
    half = Z * math.sqrt((1 - p1) / x1 + (1 - p0) / x0)
    return {"rate": p1, "uplift": p1 / p0 - 1, "ci_low": p1 / p0 * math.exp(-half) - 1,
            "ci_high": p1 / p0 * math.exp(half) - 1,
            "p_value": 2 * (1 - NormalDist().cdf(abs(z)))}


def test_experiment_counts_rates_and_p_values_equal_the_truth(experiment_collector):
    c, truth = experiment_collector
    rows = report_json(c, "experiments")
    assert [(r["xid"], r["split"]) for r in rows] == [
        ("x1", "A"), ("x1", "B"), ("x2", "A"), ("x2", "B"), ("x2", "C")]
    a, b = rows[0], rows[1]
    n_a, n_b = len(truth.members["A"]), len(truth.members["B"])
    x_a, x_b = len(truth.converters["A"]), len(truth.converters["B"])
    assert n_a + n_b == 2000 and n_a != n_b
    assert (a["visitors"], a["converters"]) == (n_a, x_a)
    assert (b["visitors"], b["converters"]) == (n_b, x_b)
    assert x_a == round(0.10 * n_a) and x_b == round(0.15 * n_b)
    assert a["rate"] == pytest.approx(x_a / n_a, rel=1e-12)
    assert a["uplift"] == 0 and a["p_value"] is None
    for key, value in expected_split(x_a, n_a, x_b, n_b).items():
        assert b[key] == pytest.approx(value, rel=1e-9), key
    assert b["p_value"] < 0.01                  # 10 % vs 15 % over 2,000 visitors
    assert b["ci_low"] < b["uplift"] < b["ci_high"]
    chi2 = (n_a - 1000) ** 2 / 1000 + (n_b - 1000) ** 2 / 1000
    srm = 2 * (1 - NormalDist().cdf(math.sqrt(chi2)))      # chi-square, 1 df
    assert a["srm_p"] == b["srm_p"] == pytest.approx(srm, rel=1e-9)
    # x2: 100 visitors per split, nobody converted: no uplift, an even split
    assert [(r["visitors"], r["converters"]) for r in rows[2:]] == [(100, 0)] * 3
    assert rows[2]["srm_p"] == pytest.approx(1.0)
    assert rows[3]["uplift"] is None and rows[3]["p_value"] == 1.0


def test_experiment_outcome_and_control_options(experiment_collector):
    c, truth = experiment_collector
    rows = {r["split"]: r for r in report_json(c, "experiments", "--outcome", "purchase",
                                               "--control", "B") if r["xid"] == "x1"}
    n_a, n_b = len(truth.members["A"]), len(truth.members["B"])
    x_a, x_b = len(truth.purchasers["A"]), len(truth.purchasers["B"])
    assert (rows["A"]["converters"], rows["B"]["converters"]) == (x_a, x_b)
    assert rows["B"]["uplift"] == 0
    for key, value in expected_split(x_b, n_b, x_a, n_a).items():
        assert rows["A"][key] == pytest.approx(value, rel=1e-9), key


def test_experiment_csv_and_text_carry_the_same_counts(experiment_collector):
    c, truth = experiment_collector
    lines = report(c, "experiments", "--csv").splitlines()
    assert lines[0] == "xid,split,visitors,converters,rate,uplift,ci_low,ci_high,p_value,srm_p"
    a = lines[1].split(",")
    assert a[:4] == ["x1", "A", str(len(truth.members["A"])), str(len(truth.converters["A"]))]
    text = report(c, "experiments")
    assert f"{len(truth.members['B']):,}" in text.splitlines()[2]


def test_traffic_counts_every_event_once(experiment_collector):
    c, truth = experiment_collector
    traffic = report_json(c, "traffic")
    assert traffic["summary"]["events"] == truth.events
    # an event without "first": false is a first visit (the Go rule): 2,000 visitors' first
    assert traffic["summary"]["new_visitors"] == 2000
    assert sum(r["events"] for r in traffic["rows"]) == truth.events
    assert report_json(c, "traffic", "--until", "2000-01-01") == {
        "summary": {"events": 0, "new_visitors": 0}, "rows": []}


def test_bad_arguments_are_clear_errors(experiment_collector):
    c, _ = experiment_collector
    for args, message in [(["funnels"], "--steps"), (["traffic", "--since", "soon"], "--since"),
                          (["pages", "--since", "2026-01-02", "--until", "2026-01-01"],
                           "after")]:
        out = subprocess.run([TRACKER, "report", *args, "--config", c.config_path],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and message in out.stderr, (args, out.stderr)


# ---------------------------------------------------------------- funnels and loops

def _session(vid, names):
    sid = str(uuid.uuid4())
    return [{"vid": vid, "sid": sid, "ename": n} for n in names]


def _send_in_order(port, events, gap=0.004):
    """One event at a time, ``gap`` apart: each is created later than the one before."""
    for event in events:
        send_phases(port, [[event]], gap)


def test_funnel_on_hand_made_sessions(collector_factory):
    c = collector_factory()
    v = [str(uuid.uuid4()) for _ in range(7)]
    sessions = [
        _session(v[0], ["view", "cart", "buy"]),            # the whole funnel
        _session(v[1], ["view", "cart"]),
        _session(v[2], ["cart", "view"]),                   # cart before view: view only
        _session(v[3], ["view", "buy"]),                    # skipped cart: view only
        _session(v[4], ["view", "cart", "cart", "other", "buy"]),
        _session(v[5], ["buy"]),                            # never entered
    ]
    split_visit = _session(v[6], ["view"]) + _session(v[6], ["cart"])   # two sessions
    events = [e for s in sessions for e in s] + split_visit
    _send_in_order(c.port, events)
    wait_stored(c, len(events))
    rows = report_json(c, "funnels", "--steps", "view,cart,buy")["rows"]
    assert [(r["step"], r["sessions"]) for r in rows] == [("view", 6), ("cart", 3),
                                                          ("buy", 2)]
    assert rows[1]["from_previous"] == pytest.approx(3 / 6)
    assert rows[2]["from_previous"] == pytest.approx(2 / 3)
    assert rows[2]["from_first"] == pytest.approx(2 / 6)


def test_referral_loop_on_hand_made_referrals(collector_factory):
    c = collector_factory()
    root, b, cc, d, e, g = (str(uuid.uuid4()) for _ in range(6))
    arrivals = [
        {"vid": root, "ename": "view"},
        {"vid": b, "ref": root, "ename": "view"},
        {"vid": cc, "ref": root, "ename": "view"},
        {"vid": d, "ref": "promo", "ename": "view"},
        {"vid": e, "ref": b, "ename": "view"},
        {"vid": g, "ref": d, "ename": "view"},
        {"vid": cc, "outcome": "signup", "ename": "signup"},
        {"vid": b, "ref": "promo", "ename": "view"},       # not b's first referral
    ]
    _send_in_order(c.port, arrivals)
    wait_stored(c, len(arrivals))
    loops = report_json(c, "loops")
    rows = {r["ref"]: r for r in loops["rows"]}
    assert set(rows) == {root, "promo", b, d}
    assert (rows[root]["brought"], rows[root]["converted"], rows[root]["referred"]) == (2, 1, 1)
    assert (rows["promo"]["brought"], rows["promo"]["referred"]) == (1, 1)
    assert (rows[b]["brought"], rows[b]["referred"]) == (1, 0)
    summary = loops["summary"]
    assert (summary["referred_visitors"], summary["their_referrals"]) == (5, 2)
    assert summary["k"] == pytest.approx(2 / 5)
    first = {r["vid"]: r["t"] for r in c.rows(
        "SELECT lower(hex(vid)) AS vid, min(created) AS t FROM ev GROUP BY vid")}

    def at(vid):
        return first[vid.replace("-", "")]
    cycles = [at(b) - at(root), at(cc) - at(root), at(e) - at(b), at(g) - at(d)]
    assert summary["cycles"] == 4
    assert summary["median_cycle_seconds"] == pytest.approx(statistics.median(cycles) / 1000)
    assert all(cycle > 0 for cycle in cycles)
    referrers = {r["ref"]: r for r in report_json(c, "referrers")}
    assert referrers["promo"]["visitors"] == 1 and referrers[root]["visitors"] == 2
