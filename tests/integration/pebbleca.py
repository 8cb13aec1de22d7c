"""A real ACME CA for the tests: Debian's ``pebble`` on loopback.

Pebble's Debian package ships no certificate for its own HTTPS listener, so
each server gets one from a small test CA made here; the collector's ACME
client trusts that CA through ``AcmeCACert``. Validation is real: pebble's
HTTP-01 port is the collector's plain port, and ``PEBBLE_VA_ALWAYS_VALID``
is never set.
"""
import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.request

import pytest

from conftest import free_port
from tlshelpers import MiniCA

PEBBLE = shutil.which("pebble") or "/usr/bin/pebble"
needs_pebble = pytest.mark.skipif(not os.path.exists(PEBBLE),
                                  reason="pebble not installed (apt-get install pebble)")


class Pebble:
    def __init__(self, directory, http_port, validity_seconds=None):
        self.dir = directory
        self.port = free_port()
        self.mgmt_port = free_port()
        files = MiniCA("pebble listener CA").write(directory, "pebble",
                                                   names=("localhost", "pebble"))
        self.listener_ca = files["ca"]
        config = {"listenAddress": f"127.0.0.1:{self.port}",
                  "managementListenAddress": f"127.0.0.1:{self.mgmt_port}",
                  "certificate": files["cert"], "privateKey": files["key"],
                  "httpPort": http_port, "tlsPort": free_port(),
                  "ocspResponderURL": "", "externalAccountBindingRequired": False}
        if validity_seconds:
            config["certificateValidityPeriod"] = validity_seconds
        self.config_path = directory / "pebble-config.json"
        self.config_path.write_text(json.dumps({"pebble": config}))
        self.log_path = directory / "pebble.log"
        self.proc = None

    @property
    def directory_url(self):
        return f"https://localhost:{self.port}/dir"

    def start(self):
        env = {k: v for k, v in os.environ.items() if k != "PEBBLE_VA_ALWAYS_VALID"}
        env.update(PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0")
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([PEBBLE, "-config", str(self.config_path)],
                                     stdout=self.log, stderr=self.log, env=env)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("pebble exited:\n" + self.logs())
            try:
                self.get(self.directory_url)
                return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError("pebble did not start:\n" + self.logs())

    def get(self, url):
        ctx = ssl.create_default_context(cafile=self.listener_ca)
        with urllib.request.urlopen(url, context=ctx, timeout=10) as resp:
            return resp.read()

    def issuing_root(self, path):
        """Write pebble's issuing root (``/roots/0``, made at its start) to ``path``."""
        path.write_bytes(self.get(f"https://localhost:{self.mgmt_port}/roots/0"))
        return str(path)

    def logs(self):
        return self.log_path.read_text(errors="replace")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.log.close()


@pytest.fixture
def pebble_factory(tmp_path):
    started = []

    def make(http_port, validity_seconds=None):
        directory = tmp_path / f"pebble{len(started)}"
        directory.mkdir()
        server = Pebble(directory, http_port, validity_seconds).start()
        started.append(server)
        return server
    yield make
    for server in started:
        server.stop()
