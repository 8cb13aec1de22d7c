"""Real nats-server processes for the NATS tests (Debian package nats-server).

Every server listens on free loopback ports only (client, monitoring, and
cluster routes), with its own config file and store directory under the
test's tmp_path. ``NatsClient`` is a small synchronous wrapper around nats-py
running its own event loop in a thread, so tests stay plain functions.
"""
import asyncio
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.request

import pytest

from conftest import free_port

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"

needs_nats = pytest.mark.skipif(not os.path.exists(NATS_SERVER),
                                reason="nats-server is not installed (Debian package nats-server)")


def wait_until(predicate, timeout=15.0, what="condition", interval=0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class NatsServer:
    def __init__(self, directory, name="n1", jetstream=False, tags=(), tls=None,
                 cluster=None):
        """``tls``: dict(cert=, key=, ca=, verify=bool); ``cluster``: dict(name=,
        port=, routes=[ports]) for a clustered node."""
        self.dir = os.path.join(directory, name)
        os.makedirs(self.dir, exist_ok=True)
        self.name = name
        self.port = free_port()
        self.http_port = free_port()
        lines = [f'server_name: "{name}"', f"listen: 127.0.0.1:{self.port}",
                 f"http: 127.0.0.1:{self.http_port}"]
        if tags:
            lines.append("server_tags: [%s]" % ", ".join(f'"{t}"' for t in tags))
        if jetstream:
            lines.append('jetstream { store_dir: "%s", max_memory_store: 64MB, '
                         'max_file_store: 256MB }' % os.path.join(self.dir, "js"))
        if tls:
            lines.append('tls { cert_file: "%s", key_file: "%s", ca_file: "%s", verify: %s }'
                         % (tls["cert"], tls["key"], tls["ca"],
                            "true" if tls.get("verify") else "false"))
        if cluster:
            routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in cluster["routes"])
            lines.append('cluster { name: "%s", listen: 127.0.0.1:%d, routes: [%s] }'
                         % (cluster["name"], cluster["port"], routes))
        self.conf = os.path.join(self.dir, "nats.conf")
        with open(self.conf, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        self.log_path = os.path.join(self.dir, "nats.log")
        self.proc = None
        self.tls = tls

    @property
    def url(self):
        return f"{'tls' if self.tls else 'nats'}://127.0.0.1:{self.port}"

    @property
    def host(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([NATS_SERVER, "-c", self.conf], stdout=self.log,
                                     stderr=self.log)
        wait_until(lambda: self.proc.poll() is not None or self.monitor("varz"),
                   10, f"nats-server {self.name} to start")
        if self.proc.poll() is not None:
            raise AssertionError(f"nats-server exited:\n{self.logs()}")
        return self

    def logs(self):
        with open(self.log_path, "rb") as fh:
            return fh.read().decode("utf-8", "replace")

    def monitor(self, endpoint):
        try:
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.http_port}/{endpoint}", timeout=2) as resp:
                return json.loads(resp.read())
        except (OSError, ValueError):
            return None

    def client_names(self):
        connz = self.monitor("connz") or {}
        return [c.get("name") or "" for c in connz.get("connections") or []]

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.log.close()


class NatsClient:
    """nats-py on its own loop in a thread; every call blocks until done."""

    def __init__(self, servers, **options):
        import nats
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.nc = self.call(nats.connect(servers, **options))

    def call(self, coro, timeout=15):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def subscribe(self, subject, queue=""):
        """A list that fills with the messages received on ``subject``."""
        received = []

        async def cb(msg):
            received.append(msg)

        async def sub():
            await self.nc.subscribe(subject, queue=queue, cb=cb)
            await self.nc.flush()
        self.call(sub())
        return received

    def publish(self, subject, payloads):
        async def pub():
            for payload in payloads:
                await self.nc.publish(subject, payload)
            await self.nc.flush()
        self.call(pub())

    def jetstream(self):
        return self.nc.jetstream(timeout=5)

    def close(self):
        try:
            self.call(self.nc.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


@pytest.fixture
def nats_factory(tmp_path):
    servers, clients = [], []

    def server(**kw):
        s = NatsServer(str(tmp_path / "nats"), **kw)
        servers.append(s)
        return s

    def client(servers_, **kw):
        c = NatsClient(servers_, **kw)
        clients.append(c)
        return c
    server.client = client
    yield server
    for c in clients:
        try:
            c.close()
        except Exception:
            pass
    for s in servers:
        s.stop()
