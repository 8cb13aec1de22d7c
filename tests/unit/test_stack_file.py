"""docker-stack.yml holds together: what it references exists, the collector's
config loads and names the stack's services, and the deploy settings keep the
promises docs/docker.md makes (graceful drain, one spool per volume, clusters
of three). `docker stack config` would need a Docker engine; this reads the
file as Swarm would (YAML with anchors and merge keys) and checks the rest.
"""
import math
import os
import re

import pytest
import yaml

from engine.config import load_config
from engine.supervisor import KILL_GRACE

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STACK = os.path.join(REPO, "docker-stack.yml")
NATS = ["nats1", "nats2", "nats3"]
CASSANDRA = ["cassandra1", "cassandra2", "cassandra3"]


@pytest.fixture(scope="module")
def stack():
    with open(STACK) as fh:
        return yaml.safe_load(fh)


@pytest.fixture(scope="module")
def services(stack):
    return stack["services"]


@pytest.fixture(scope="module")
def collector_config(stack):
    return load_config(os.path.join(REPO, stack["configs"]["tracker_config"]["file"]))


def seconds(duration):
    """A compose duration ("30s", "2m", "1m30s") in seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    scale = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(float(n) * scale[u] for n, u in parts)


def flag(command, name):
    return command[command.index(name) + 1]


def test_services_of_the_scale_out_story(services):
    assert set(services) == {"collector", "schema", *NATS, *CASSANDRA}


def test_references_are_declared_and_declarations_used(stack, services):
    used = {"networks": set(), "volumes": set(), "configs": set(), "secrets": set()}
    for service in services.values():
        used["networks"].update(service.get("networks", []))
        used["volumes"].update(v["source"] for v in service.get("volumes", [])
                               if v["type"] == "volume")
        used["configs"].update(c["source"] for c in service.get("configs", []))
        used["secrets"].update(s["source"] for s in service.get("secrets", []))
    for kind, names in used.items():
        assert names == set(stack[kind]), kind
    assert os.path.isfile(os.path.join(REPO, stack["configs"]["tracker_config"]["file"]))


def test_one_overlay_network_for_everything(stack, services):
    assert stack["networks"]["tracker"]["driver"] == "overlay"
    assert all(s["networks"] == ["tracker"] for s in services.values())


def test_collector_config_names_the_stack(collector_config, services):
    by_service = {e["Service"]: e for e in collector_config.notify}
    assert set(by_service) == {"cassandra", "nats"}
    assert by_service["cassandra"]["Hosts"] == CASSANDRA
    assert [h.split(":")[0] for h in by_service["nats"]["Hosts"]] == NATS
    # Not Critical: a collector must boot (and spool) while a cluster is still
    # forming, or Swarm would restart it in a loop.
    assert not any(e.get("Critical") for e in collector_config.notify)
    assert collector_config.durability == "spool"
    assert collector_config.spool_directory.startswith("/var/lib/tracker/")


def test_collector_tls_material_comes_from_secrets(collector_config, services, stack):
    secrets = {s["target"]: s for s in services["collector"]["secrets"]}
    assert collector_config.tls == "local"
    for path in (collector_config.tls_cert, collector_config.tls_key):
        name = os.path.basename(path)
        assert path == f"/run/secrets/{name}" and name in secrets
        assert stack["secrets"][secrets[name]["source"]] == {"external": True}
        # Readable by the image's user (Dockerfile: useradd --uid) and no one else.
        assert secrets[name]["uid"] == image_uid() and secrets[name]["mode"] == 0o400


def image_uid():
    with open(os.path.join(REPO, "Dockerfile")) as fh:
        return re.search(r"useradd .*--uid (\d+)", fh.read()).group(1)


def test_collector_ports_are_the_configs_listeners(collector_config, services):
    targets = {p["target"] for p in services["collector"]["ports"]}
    assert targets == {collector_config.listen[1], collector_config.listen_tls[1]}


def test_collector_stops_gracefully(collector_config, services):
    collector = services["collector"]
    assert collector["stop_signal"] == "SIGTERM"
    # The engine must not SIGKILL a replica that is still within its drain.
    assert seconds(collector["stop_grace_period"]) > collector_config.drain_timeout + KILL_GRACE


def test_collector_health_is_liveness(services):
    test = services["collector"]["healthcheck"]["test"]
    assert test[0] == "CMD" and test[-1] == "/ping"


def test_collector_deploy(services):
    collector = services["collector"]
    deploy = collector["deploy"]
    assert deploy["replicas"] >= 2
    # One spool per volume: a second replica on the node, or a new task started
    # before the old one stopped, would share the node-local spool volume.
    assert deploy["placement"]["max_replicas_per_node"] == 1
    assert deploy["update_config"]["order"] == "stop-first"
    assert deploy["rollback_config"]["order"] == "stop-first"
    assert deploy["update_config"]["failure_action"] == "rollback"
    limits = deploy["resources"]["limits"]
    assert limits["memory"] and limits["cpus"]
    # Inside a container the CPU count is the host's; workers follow the limit.
    assert int(flag(collector["command"], "--workers")) == math.ceil(float(limits["cpus"]))


def test_collector_connection_tuning(services):
    collector = services["collector"]
    nofile = collector["ulimits"]["nofile"]
    assert nofile["soft"] == nofile["hard"] >= 65536
    # Only network-namespace sysctls can be set per container.
    assert collector["sysctls"] and all(k.startswith("net.") for k in collector["sysctls"])
    assert {"net.core.somaxconn", "net.ipv4.ip_local_port_range"} <= set(collector["sysctls"])


def test_schema_job_runs_once(services):
    schema = services["schema"]
    assert schema["command"][:2] == ["schema", "apply"]
    assert schema["deploy"]["replicas"] == 1
    assert schema["deploy"]["restart_policy"]["condition"] == "on-failure"
    # The image's HEALTHCHECK probes a server the job never starts.
    assert schema["healthcheck"] == {"disable": True}


def test_nats_cluster_of_three(services):
    names, constraints = set(), set()
    for name in NATS:
        service = services[name]
        command = service["command"]
        names.add(flag(command, "--name"))
        assert flag(command, "--cluster_name") == "tracker"
        port = flag(command, "--cluster").rsplit(":", 1)[1]
        routes = flag(command, "--routes").split(",")
        assert routes == [f"nats://{n}:{port}" for n in NATS]
        assert "--jetstream" in command
        assert any(v["target"] == flag(command, "--store_dir") for v in service["volumes"])
        assert service["deploy"]["endpoint_mode"] == "dnsrr"
        constraints.update(service["deploy"]["placement"]["constraints"])
        # Liveness of the server alone: a cluster-wide /healthz would wait for
        # peers that Swarm's DNS names only once they are healthy.
        assert service["healthcheck"]["test"][-1].endswith("/healthz?js-enabled-only=true")
    assert names == set(NATS)
    assert constraints == {f"node.labels.tracker.{n} == true" for n in NATS}


def test_cassandra_cluster_of_three(services):
    clusters, constraints = set(), set()
    for name in CASSANDRA:
        service = services[name]
        env = service["environment"]
        clusters.add(env["CASSANDRA_CLUSTER_NAME"])
        assert set(env["CASSANDRA_SEEDS"].split(",")) < set(CASSANDRA)
        assert [v["target"] for v in service["volumes"]] == ["/var/lib/cassandra"]
        assert service["deploy"]["endpoint_mode"] == "dnsrr"
        constraints.update(service["deploy"]["placement"]["constraints"])
        # Seeds are found by name, which Swarm resolves only for healthy tasks.
        assert "healthcheck" not in service
    assert len(clusters) == 1
    assert constraints == {f"node.labels.tracker.{n} == true" for n in CASSANDRA}


def test_cassandra_writes_survive_a_node_down(collector_config, services):
    [entry] = [e for e in collector_config.notify if e["Service"] == "cassandra"]
    dc = services["cassandra1"]["environment"]["CASSANDRA_DC"]
    assert entry["Replication"] == {"class": "NetworkTopologyStrategy", dc: 3}
    assert entry["Consistency"] == "LOCAL_QUORUM" and entry["LocalDC"] == dc
