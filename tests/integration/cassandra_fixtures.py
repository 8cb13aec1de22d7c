"""Real Cassandra 5.0 nodes for integration tests (scripts/cassandra_node.py).

Import the fixtures into a test module (``from cassandra_fixtures import
cql, entry, node``): each module gets its own node, started once for the
module; ``cluster`` is three nodes on 127.0.0.2-.4 (heaps 1 GiB), also once
per module. Without a JDK and Maven the nodes cannot start and the tests FAIL
(they do not skip): CI must provide them (.ci/run installs and pre-resolves).
"""
import importlib.util
import json
import os
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def node_module():
    spec = importlib.util.spec_from_file_location(
        "cassandra_node", os.path.join(ROOT, "scripts", "cassandra_node.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def node(tmp_path_factory, request):
    n = node_module().CassandraNode(
        str(tmp_path_factory.mktemp("cassandra_" + request.module.__name__)), heap="1g")
    n.start()
    print(f"cassandra node up in {n.start_seconds:.1f} s on port {n.native_port}")
    yield n
    n.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, request):
    c = node_module().CassandraCluster(
        str(tmp_path_factory.mktemp("cluster_" + request.module.__name__)), 3, heap="1g")
    try:
        c.start()
        print(f"3 cassandra nodes up in {c.start_seconds:.1f} s on port {c.native_port}")
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def cql(node):
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import ExponentialReconnectionPolicy, RoundRobinPolicy
    profile = ExecutionProfile(load_balancing_policy=RoundRobinPolicy(), request_timeout=30)
    cluster = Cluster(["127.0.0.1"], port=node.native_port, protocol_version=5,
                      execution_profiles={EXEC_PROFILE_DEFAULT: profile},
                      reconnection_policy=ExponentialReconnectionPolicy(0.2, 2.0))
    session = cluster.connect()
    yield session
    cluster.shutdown()


def wait_session_up(cql, timeout=120):
    """Return once the test's own session queries the node again. After a
    restart the node answers CQL (``node.start`` waited for that) before the
    driver has noticed: it marked the host down when the node stopped and
    reconnects with backoff, and until then every query fails at once with
    NoHostAvailable."""
    from cassandra import OperationTimedOut
    from cassandra.cluster import NoHostAvailable
    deadline = time.monotonic() + timeout
    error = None
    while time.monotonic() < deadline:
        hosts = cql.cluster.metadata.all_hosts()
        if hosts and all(h.is_up for h in hosts):
            try:
                cql.execute("SELECT release_version FROM system.local")
                return
            except (NoHostAvailable, OperationTimedOut) as exc:
                error = exc
        time.sleep(0.2)
    raise AssertionError(f"the test's CQL session did not reconnect within {timeout} s "
                         f"(hosts {cql.cluster.metadata.all_hosts()}): {error!r}")


def count_rows(cql, table):
    """Rows in ``table`` (keyspace.name), or -1 while the session cannot
    reach the node or the node answers too slowly (a busy machine: a wait
    loop's probe tries again rather than fail)."""
    from cassandra import OperationTimedOut, ReadTimeout
    from cassandra.cluster import NoHostAvailable
    try:
        return cql.execute(f"SELECT count(*) FROM {table}").one()[0]
    except (NoHostAvailable, OperationTimedOut, ReadTimeout):
        return -1


def entry(node, keyspace, **extra):
    """A Notify entry for this node."""
    e = {"Service": "cassandra", "Hosts": [f"127.0.0.1:{node.native_port}"],
         "Context": keyspace, "Timeout": 5000}
    e.update(extra)
    return e


def counter_doubt(logs):
    """Failed counter requests that may have changed a counter: [(pid,
    failed requests, unsent, error)], from the sink's "counter updates
    failed" log lines. A failed request is harmless when the driver says it
    never reached Cassandra (``unsent``: no host available, refused as
    unavailable or overloaded); anything else (a connection that dropped
    under a sent request, a timeout) leaves its increments' outcome unknown,
    and their resend in doubt (engine/store/sinks/cassandra/sink.py)."""
    doubt = []
    for line in logs.splitlines():
        if "counter updates failed" not in line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:          # a shape not understood here: assume the worst
            doubt.append((None, None, None, line[-200:]))
            continue
        if rec.get("unsent") != rec.get("failed_requests"):
            doubt.append((rec.get("pid"), rec.get("failed_requests"), rec.get("unsent"),
                          rec.get("error", "")[:120]))
    return doubt
