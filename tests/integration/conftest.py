"""Integration harness: a real `tracker serve` on a free loopback port.

Each test gets its own directory, config file and SQLite store; the
collector runs as a subprocess exactly as a user starts it, and tests talk to
it over real sockets.
"""
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time

import pytest

TRACKER = shutil.which("tracker", path=os.path.dirname(sys.executable)) or "tracker"


def fetch_hash(conn, path, headers=None):
    """GET ``path`` on an http.client connection; (response, bytes, sha256 hex),
    reading the body a MiB at a time (large bodies never sit in memory)."""
    conn.request("GET", path, headers=headers or {})
    resp = conn.getresponse()
    digest, total = hashlib.sha256(), 0
    while True:
        chunk = resp.read(1 << 20)
        if not chunk:
            break
        digest.update(chunk)
        total += len(chunk)
    return resp, total, digest.hexdigest()


def peak_rss(pid):
    """The process's peak resident set (VmHWM), bytes: a high-water mark, so
    a burst of buffering shows even after it was freed."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def run_tracker(*args, timeout=120):
    """The ``tracker`` command line, its output captured as text."""
    return subprocess.run([TRACKER, *args], capture_output=True, text=True, timeout=timeout)


def wait_for(predicate, timeout=10):
    """True as soon as ``predicate()`` is, False after ``timeout`` seconds.
    It is asked once per try: a condition that holds for a moment (a process
    list read between a kill and the respawn) is not asked again to fail."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def self_signed(directory, name="127.0.0.1"):
    """A throwaway certificate and key for ``name`` (an IP address) in ``directory``."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", "key.pem", "-out", "cert.pem", "-subj", f"/CN={name}",
                    "-addext", f"subjectAltName=IP:{name}"],
                   cwd=directory, check=True, capture_output=True)
    return os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Collector:
    def __init__(self, directory, config=None, workers=2, env=None):
        self.dir = directory
        self.env = env
        self.port = free_port()
        self.workers = workers
        self.db_path = os.path.join(directory, "tracker.db")
        self.config = {"TLS": "off", "Domains": ["example.com"],
                       "DefaultRedirect": "https://example.com/home",
                       "Notify": [{"Service": "sqlite", "Path": "tracker.db",
                                   "Critical": True}],
                       "BatchMaxAgeMs": 50}
        self.config.update(config or {})
        self.config_path = os.path.join(directory, "config.json")
        self.write_config(self.config)
        self.proc = None
        self.log_path = os.path.join(directory, "tracker.log")

    def write_config(self, config):
        with open(self.config_path, "w") as fh:
            json.dump(config, fh)

    # ---- process ---------------------------------------------------------
    def start(self, wait=True):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [TRACKER, "serve", "--config", self.config_path, "--workers", str(self.workers),
             "--listen", f"127.0.0.1:{self.port}"],
            stdout=self.log, stderr=self.log,
            env=None if self.env is None else {**os.environ, **self.env})
        if wait:
            self.wait_serving()
        return self

    def wait_serving(self, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"collector exited {self.proc.returncode}:\n{self.logs()}")
            if len(self.worker_pids()) >= self.workers and '"msg":"serving"' in self.logs():
                try:
                    if self.get("/ping")[0] == 200:
                        return
                except OSError:
                    pass
            time.sleep(0.05)
        raise AssertionError("collector did not start:\n" + self.logs())

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self.log.close()
        return code

    def logs(self):
        with open(self.log_path, "rb") as fh:
            return fh.read().decode("utf-8", "replace")

    def child_pids(self):
        """Every child of the supervisor (HTTP, store, consume, acme). Read
        from each process's stat: /proc/<pid>/task/<tid>/children lists
        only what that thread forked and, by the kernel's own account, is
        not reliable while children come and go (it missed a live store)."""
        found = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat", "rb") as fh:
                    stat = fh.read()
            except OSError:
                continue
            fields = stat[stat.rindex(b")") + 2:].split()
            if int(fields[1]) == self.proc.pid and fields[0] != b"Z":
                found.append(int(name))
        return sorted(found)

    def pids_of(self, kind):
        """Children titled ``tracker: <kind>-<i>`` (workers/base.py set_title)."""
        found = []
        for pid in self.child_pids():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    title = fh.read().split(b"\0")[0].decode("utf-8", "replace")
            except FileNotFoundError:
                continue
            if title.startswith(f"tracker: {kind}-"):
                found.append(pid)
        return found

    def worker_pids(self):
        """The HTTP workers."""
        return self.pids_of("http")

    def store_pids(self):
        return self.pids_of("store")

    def replaced(self, kind, victims, count):
        """``count`` children of ``kind`` run and none is one of ``victims``
        (pids), from one reading of /proc: two readings could see a dying
        victim in the first and miss it in the second, before its
        replacement is up."""
        pids = self.pids_of(kind)
        return len(pids) == count and not set(pids) & set(victims)

    # ---- HTTP ------------------------------------------------------------
    def connection(self, timeout=10):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None):
        conn = self.connection()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def get(self, path, headers=None):
        return self.request("GET", path, headers=headers)

    def post(self, path, payload, headers=None):
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        hdrs = {"Content-Type": "application/json"}
        hdrs.update(headers or {})
        return self.request("POST", path, body=body, headers=hdrs)

    def raw(self, data, read_timeout=5.0, until_closed=True):
        """Send raw bytes on a new socket; return everything read back."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=read_timeout) as s:
            s.sendall(data)
            chunks = []
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    if not until_closed:
                        break
            except socket.timeout:
                pass
            return b"".join(chunks)

    # ---- store -----------------------------------------------------------
    def db(self):
        conn = sqlite3.connect(self.db_path)
        conn.row_factory = sqlite3.Row
        return conn

    def rows(self, sql, *args):
        with self.db() as conn:
            return [dict(r) for r in conn.execute(sql, args)]


@pytest.fixture
def collector_factory(tmp_path):
    started = []

    def make(config=None, workers=2, start=True, name="c", env=None):
        directory = tmp_path / name
        directory.mkdir(exist_ok=True)
        c = Collector(str(directory), config, workers, env)
        started.append(c)
        return c.start() if start else c
    yield make
    for c in started:
        if c.proc is not None and c.proc.poll() is None:
            c.proc.kill()
            c.proc.wait()


@pytest.fixture
def collector(collector_factory):
    return collector_factory()


def params_of(row):
    return json.loads(row["params"]) if row.get("params") else {}


# The session's Kafka broker, shared by the Kafka test modules (started on first use).
from kafka_fixtures import kafka_broker  # noqa: E402,F401
