"""docker/healthcheck.py finds the address the collector listens on from its
own command line and config (the container test runs the real probe)."""
import importlib.util
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BAKED = os.path.join(REPO, "docker", "config.json")
SWARM = os.path.join(REPO, "docker", "swarm", "config.json")


@pytest.fixture(scope="module")
def healthcheck():
    spec = importlib.util.spec_from_file_location(
        "healthcheck", os.path.join(REPO, "docker", "healthcheck.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_baked_config_listens_on_all_addresses_so_probe_loopback(healthcheck):
    assert healthcheck.target(["serve", "--config", BAKED]) == (False, "127.0.0.1", 8080)


def test_command_line_listen_wins(healthcheck):
    argv = ["serve", "--config", BAKED, "--listen", "127.0.0.2:9999", "--workers", "2", ""]
    assert healthcheck.target(argv) == (False, "127.0.0.2", 9999)


def test_local_tls_probes_the_tls_listener(healthcheck):
    assert healthcheck.target(["serve", "--config", SWARM]) == (True, "127.0.0.1", 8443)
    argv = ["serve", "--config", SWARM, "--listen-tls", "[::]:9443"]
    assert healthcheck.target(argv) == (True, "::1", 9443)


def test_admin_listener_is_probed_when_configured(healthcheck, tmp_path):
    import json
    with open(SWARM) as fh:
        config = json.load(fh)
    config["AdminListen"] = "0.0.0.0:9100"      # TLS stays on for the public port
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    assert healthcheck.target(["serve", "--config", str(path)]) == (False, "127.0.0.1", 9100)
