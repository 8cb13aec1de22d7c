"""The collector's image, built from the Dockerfile and run with podman.

Slow (the image is built once per run; minutes from a cold cache) and needs
podman, runc and debootstrap, so it is behind the ``container`` marker and
left out of the default run:

    .venv/bin/pytest -m container tests/integration/test_container.py
"""
import http.client
import json
import os
import re
import sqlite3

import pytest

from conftest import free_port
from natsserver import NATS_SERVER, NatsClient, wait_until
from podman import Container, build_image, base_image, data_dir, missing_tools, podman

pytestmark = [
    pytest.mark.integration, pytest.mark.container,
    pytest.mark.skipif(bool(missing_tools()),
                       reason=f"needs {', '.join(missing_tools())} (see docs/docker.md)"),
]

VIDS = ["3d0be300-cbd2-11e8-aa59-ffd128a54d9%d" % i for i in range(10)]


@pytest.fixture(scope="module")
def image():
    return build_image()


@pytest.fixture
def containers():
    made = []

    def run(*args, **kw):
        container = Container(*args, **kw)
        made.append(container)
        return container.start()
    yield run
    for container in made:
        container.remove()


# ---- talking to a collector in a container -------------------------------
def request(port, method, path, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_serving(container, port):
    def answers():
        if not container.running():
            raise AssertionError(f"container exited:\n{container.logs()}")
        try:
            return request(port, "GET", "/ping")[0] == 200
        except OSError:
            return False
    wait_until(answers, 60, f"{container.name} to answer /ping", interval=0.2)


def track(port, tag, count):
    """``count`` events named ``tag``, alternating GET and POST; every answer 200."""
    for i in range(count):
        vid = VIDS[i % len(VIDS)]
        if i % 2:
            status, _ = request(port, "GET", f"/tr/v1/vid/{vid}/ename/{tag}/n/{i}")
        else:
            body = json.dumps({"vid": vid, "ename": tag, "params": {"n": str(i)}})
            status, _ = request(port, "POST", "/tr/v1/", body.encode())
        assert status == 200


def stored(directory, sql):
    with sqlite3.connect(os.path.join(directory, "tracker.db")) as conn:
        return conn.execute(sql).fetchall()


def spool_files(directory):
    spool = os.path.join(directory, "spool")
    return [n for n in os.listdir(spool) if n.endswith(".spool")] if os.path.isdir(spool) else []


def write_config(path, config):
    with open(path, "w") as fh:
        json.dump(config, fh)
    os.chmod(path, 0o644)
    return path


# ---- tests -----------------------------------------------------------------
def test_image_serves_stores_and_drains_on_stop(image, containers, tmp_path):
    data = data_dir(str(tmp_path / "data"))
    port = free_port()
    # The baked config (SQLite and spool in the volume); only the address is
    # changed, as `docker run ... serve --listen` would. A low soft nofile
    # under a higher hard one, as containerd gives, for the entrypoint to raise.
    # (Any --ulimit replaces containers.conf's list, so nproc is repeated.)
    collector = containers(image, ["serve", "--listen", f"127.0.0.1:{port}", "--workers", "2"],
                           mounts=[f"{data}:/var/lib/tracker"],
                           options=["--ulimit", "nofile=1024:20000",
                                    "--ulimit", "nproc=32768:32768"])
    wait_serving(collector, port)
    assert collector.healthcheck() == 0          # the image's HEALTHCHECK: /ready
    assert collector.exec("id", "-u").strip() == "10001"
    limits = collector.exec("cat", "/proc/1/limits")   # PID 1: the supervisor
    assert re.search(r"Max open files\s+20000\s+20000", limits), limits

    track(port, "boxed", 20)
    assert collector.stop() == 0                 # STOPSIGNAL drains; exit 0
    logs = collector.logs()
    assert '"msg":"draining"' in logs and '"msg":"supervisor exiting","code":0' in logs

    assert stored(data, "SELECT count(*) FROM events WHERE ename = 'boxed'") == [(20,)]
    assert spool_files(data) == []               # everything delivered, spool removed
    # The image's entry point runs the other commands too.
    stats = podman("run", "--rm", "-v", f"{data}:/var/lib/tracker", image, "stats").stdout
    assert re.search(r"^\s+events\s+20$", stats, re.M), stats


@pytest.mark.skipif(not os.path.exists(NATS_SERVER), reason="nats-server is not installed")
def test_two_collectors_and_nats_in_containers(image, containers, tmp_path):
    """Compose-style, on one host: nats-server and two collector replicas,
    each replica with its own volume, all publishing to the same subject."""
    nats_port = free_port()
    # No registry here for the official nats image: the host's nats-server
    # binary (Debian package, needs only libc) runs in the base image.
    containers(base_image(), ["nats-server", "-a", "127.0.0.1", "-p", str(nats_port)],
               mounts=[f"{NATS_SERVER}:/usr/local/bin/nats-server:ro"], name="nats")
    wait_until(lambda: _accepts(nats_port), 30, "nats-server in its container")
    subscriber = NatsClient(f"nats://127.0.0.1:{nats_port}")
    try:
        received = subscriber.subscribe("tic.track")
        replicas = []
        for i in range(2):
            data = data_dir(str(tmp_path / f"data{i}"))
            port = free_port()
            config = write_config(str(tmp_path / f"config{i}.json"), {
                "TLS": "off", "ProxyPort": f"127.0.0.1:{port}",
                "SpoolDirectory": "/var/lib/tracker/spool",
                "Notify": [
                    {"Service": "sqlite", "Path": "/var/lib/tracker/tracker.db",
                     "Critical": True},
                    {"Service": "nats", "Hosts": [f"127.0.0.1:{nats_port}"],
                     "Context": "tic.track", "Critical": True}]})
            # The mounted config replaces the baked one; no --listen: the
            # health probe must find the port in the config by itself.
            replica = containers(image, ["serve", "--workers", "1"], mounts=[
                f"{data}:/var/lib/tracker", f"{config}:/etc/tracker/config.json:ro"])
            replicas.append((replica, port, data))
        for replica, port, _ in replicas:
            wait_serving(replica, port)
            assert replica.healthcheck() == 0    # the probe found the mounted config's port
        for n, (_, port, _) in enumerate(replicas):
            track(port, f"replica{n}", 15)
        for replica, _, _ in replicas:
            assert replica.stop() == 0
        wait_until(lambda: len(received) >= 30, 30, "30 events on tic.track")
        published = {json.loads(m.data)["eid"] for m in received}
        in_stores = set()
        for n, (_, _, data) in enumerate(replicas):
            rows = stored(data, "SELECT eid, ename FROM events")
            assert sorted({ename for _, ename in rows}) == [f"replica{n}"] and len(rows) == 15
            in_stores |= {eid for eid, _ in rows}
            assert spool_files(data) == []
        assert published == in_stores and len(received) == 30
    finally:
        subscriber.close()


def _accepts(port):
    import socket
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False
