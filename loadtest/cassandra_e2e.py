"""The Cassandra sink's cost in a running collector (loadtest/bench_cassandra.py).

Two collectors, one HTTP worker and one store process each, the whole process
tree pinned to cpu 1, get the same ``COUNT`` tracked requests from wrk pinned to
cpu 0 (loadtest/cassandra_mix.lua, fixed seed): one with ``Notify: []`` (parse,
spool, answer; the store process only deletes finished files), one with the
Cassandra entry (the store process reads the spool and writes Cassandra). The
Cassandra JVM(s) are pinned to cpu 0 for these runs, beside wrk, so they take
nothing from the collector's core. CPU is the whole tree's from /proc, counted
from before wrk starts until every accepted event is written (Cassandra: the
sink's written counter reaches the accepted one), so the drain is included.
The difference of the two runs' CPU per event is the sink's cost: reading and
decoding the spool, the fan-out, the plan, the driver.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request

from loadtest.bench_http import children, cpu_seconds, free_port, pin, tracker_command

HERE = os.path.dirname(os.path.abspath(__file__))
LUA = os.path.join(HERE, "cassandra_mix.lua")


def title(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().split(b"\0")[0].decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def metrics(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()

    def value(pattern):
        m = re.search(pattern, text, re.M)
        return float(m.group(1)) if m else 0.0
    return (value(r"^tracker_events_total ([\d.e+]+)$"),
            value(r'^tracker_sink_events_written_total\{sink="cassandra"\} ([\d.e+]+)$'))


class Collector:
    def __init__(self, notify, directory, env=None, command=None):
        self.dir = directory
        self.port = free_port()
        config = {"TLS": "off", "LogLevel": "warning", "MaximumConnections": 0,
                  "SpoolDirectory": os.path.join(directory, "spool"), "Notify": notify}
        path = os.path.join(directory, "config.json")
        with open(path, "w") as fh:
            json.dump(config, fh)
        self.log = open(os.path.join(directory, "tracker.log"), "wb")
        self.proc = subprocess.Popen(pin(1) + (command or tracker_command()) + [
            "serve", "--config", path, "--workers", "1", "--listen", f"127.0.0.1:{self.port}"],
            stdout=self.log, stderr=self.log, env=None if env is None else {**os.environ, **env})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                metrics(self.port)
                if any(title(p).startswith("tracker: store-") for p in children(self.proc.pid)):
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise SystemExit(f"collector did not start: {open(self.log.name).read()[-2000:]}")

    def tree(self):
        return [self.proc.pid] + children(self.proc.pid)

    def store(self):
        return [p for p in children(self.proc.pid) if title(p).startswith("tracker: store-")]

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def pin_jvms(pids, cpus):
    for pid in pids:
        subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)],
                       stdout=subprocess.DEVNULL, check=False)


def load(port, count, seed, timeout):
    """wrk with cassandra_mix.lua until ``count`` requests are answered. wrk
    runs for its whole duration even when the script stops its thread, so it
    is interrupted (SIGINT: it stops and reports) once the collector has
    accepted ``count`` events."""
    wrk = subprocess.Popen(pin(0) + ["wrk", "-t1", "-c64", f"-d{timeout}s", "-s", LUA,
                                     f"http://127.0.0.1:{port}/", "--", str(count), str(seed)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while wrk.poll() is None and metrics(port)[0] < count:
            time.sleep(0.2)
    finally:
        if wrk.poll() is None:
            wrk.send_signal(signal.SIGINT)
        _, err = wrk.communicate(timeout=30)
    if wrk.returncode != 0:
        raise SystemExit(f"wrk failed ({wrk.returncode}): {err.decode()[-500:]}")


def one_run(notify, count, seed, jvm_pids, storing, timeout=600, env=None, command=None):
    """One collector (``command``: another checkout's ``tracker``), ``count``
    requests; CPU seconds of its tree, of its store process and of the JVMs,
    events accepted and written, seconds."""
    directory = tempfile.mkdtemp(prefix="tracker-bench-cass-e2e-")
    c = Collector(notify, directory, env, command)
    try:
        time.sleep(1.0)                                    # start-up settles
        tree0, store0, jvm0 = cpu_seconds(c.tree()), cpu_seconds(c.store()), cpu_seconds(jvm_pids)
        started = time.monotonic()
        load(c.port, count, seed, timeout)
        accepted, written = metrics(c.port)
        while storing and written < accepted:
            if time.monotonic() - started > timeout:
                raise SystemExit(f"the store did not catch up: {written} of {accepted}")
            # each /metrics answer costs the collector ~0.8 ms of CPU (100 in 10 s:
            # 70-100 ms more than none), which counts in the tree: ten a second
            # over a 10 s drain were ~5 us per event. Once a second until the
            # last tenth is near, then ten a second for the end time.
            time.sleep(1.0 if written < 0.9 * accepted else 0.1)
            accepted, written = metrics(c.port)
        if not storing:
            time.sleep(0.5)                                # the last group commits
        elapsed = time.monotonic() - started
        return {"tree": cpu_seconds(c.tree()) - tree0, "store": cpu_seconds(c.store()) - store0,
                "jvm": cpu_seconds(jvm_pids) - jvm0, "events": accepted, "written": written,
                "seconds": elapsed}
    finally:
        c.stop()
        shutil.rmtree(directory, ignore_errors=True)
