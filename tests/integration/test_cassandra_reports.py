"""`tracker report` with Cassandra as the only store, against a real
Cassandra 5.0 node: one collector writes the report corpus to SQLite and
Cassandra at once; every report kind must then print the same JSON from a
config whose only store is the SQLite file and from one whose only store is
the keyspace (engine/reports/cassandra_copy.py), and the experiment counts
must equal the corpus's truth."""
import json
import os

import pytest

from cassandra_fixtures import cql, entry, node  # noqa: F401 (fixtures)
from conftest import run_tracker, wait_for
from report_corpus import Experiment, send_phases

pytestmark = pytest.mark.integration

KS = "reports"
ARGS = {"experiments": [], "funnels": ["--steps", "landing,view,signup"], "loops": [],
        "traffic": [], "pages": [], "referrers": [], "campaigns": []}


def run_report(config_path, kind, *args):
    out = run_tracker("report", kind, "--config", config_path, "--json", *args, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout), out.stderr


def only_store(collector, name, store):
    with open(collector.config_path) as fh:
        config = json.load(fh)
    config["Notify"] = [store]
    path = os.path.join(collector.dir, name)
    with open(path, "w") as fh:
        json.dump(config, fh)
    return path


@pytest.fixture(scope="module")
def both_stores(node, cql, tmp_path_factory):  # noqa: F811
    from conftest import Collector
    cassandra = entry(node, KS, Critical=True)
    sqlite = {"Service": "sqlite", "Path": "tracker.db"}
    c = Collector(str(tmp_path_factory.mktemp("cassandra_reports")),
                  {"Notify": [sqlite, cassandra], "BatchMaxAgeMs": 50})
    assert run_tracker("schema", "apply", "--config", c.config_path, timeout=180).returncode == 0
    c.start()
    truth = Experiment()
    try:
        assert send_phases(c.port, truth.phases) == truth.events
        in_cassandra = lambda: cql.execute(f"SELECT count(*) FROM {KS}.events").one()[0]  # noqa
        assert wait_for(lambda: in_cassandra() >= truth.events, timeout=90), in_cassandra()
        assert in_cassandra() == truth.events
        assert c.stop() == 0              # SQLite has everything once the drain is done
        assert c.rows("SELECT count(*) AS n FROM ev")[0]["n"] == truth.events
        yield (only_store(c, "sqlite-only.json", {**sqlite, "Path": c.db_path}),
               only_store(c, "cassandra-only.json", cassandra), truth)
    finally:
        c.stop()


@pytest.mark.parametrize("kind", sorted(ARGS))
def test_every_report_reads_the_same_from_cassandra(both_stores, kind):
    from_sqlite, from_cassandra, truth = both_stores
    expected, _ = run_report(from_sqlite, kind, *ARGS[kind])
    got, said = run_report(from_cassandra, kind, *ARGS[kind])
    assert f"copied {truth.events} events from cassandra {KS}" in said
    assert got == expected
    assert got, kind                          # the corpus fills every report


def test_experiment_counts_from_cassandra_equal_the_truth(both_stores):
    _, from_cassandra, truth = both_stores
    rows, _ = run_report(from_cassandra, "experiments", "--control", "A")
    x1 = {r["split"]: r for r in rows if r["xid"] == "x1"}
    for split in "AB":
        assert x1[split]["visitors"] == len(truth.members[split])
        assert x1[split]["converters"] == len(truth.converters[split])
    purchase, _ = run_report(from_cassandra, "experiments", "--outcome", "purchase")
    assert {r["split"]: r["converters"] for r in purchase if r["xid"] == "x1"} == {
        s: len(truth.purchasers[s]) for s in "AB"}


def test_an_unreachable_cassandra_is_a_clear_error(tmp_path):
    path = tmp_path / "down.json"
    path.write_text(json.dumps({"Notify": [{"Service": "cassandra", "Hosts": ["127.0.0.1:1"],
                                            "Context": KS, "Timeout": 1000}]}))
    out = run_tracker("report", "traffic", "--config", str(path))
    assert out.returncode == 1
    assert "cassandra 127.0.0.1:1/reports: cannot read events" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_a_config_without_a_readable_store_is_refused(tmp_path):
    path = tmp_path / "nats.json"
    path.write_text(json.dumps({"Notify": [{"Service": "nats", "Hosts": ["127.0.0.1:1"],
                                            "Context": "tic.track"}]}))
    out = run_tracker("report", "traffic", "--config", str(path), timeout=60)
    assert out.returncode == 2
    assert "no sqlite or cassandra store in Notify" in out.stderr


def test_a_funnel_without_steps_is_refused_before_the_copy(both_stores):
    _, from_cassandra, _ = both_stores
    out = run_tracker("report", "funnels", "--config", from_cassandra, timeout=60)
    assert out.returncode == 2
    assert "funnels needs its steps" in out.stderr
    assert "copied" not in out.stderr                   # nothing was read from Cassandra
