#!/usr/bin/env python3
"""Real Apache Kafka brokers (KRaft, no ZooKeeper) for tests, CI and benchmarks.

No tarball and no container: the broker's jars come from Maven Central
(``org.apache.kafka:kafka_2.13`` with its runtime dependencies, plus the
log4j binding for its slf4j logging, via a pinned maven-dependency-plugin)
into a cache under ``~/.cache/tracker``. Each node is combined broker and
controller: its storage is formatted with ``kafka.tools.StorageTool format``
and it runs as ``java -cp 'lib/*' kafka.Kafka server.properties``. Every port
is a free one on 127.0.0.1.

    python scripts/kafka_node.py resolve                # fetch + cache the jars
    python scripts/kafka_node.py start DIR [--nodes 3]  # a cluster of 1 or more
    python scripts/kafka_node.py stop DIR

``start`` returns once every node says it has started and prints the
bootstrap servers; the nodes keep running until ``stop``. From Python:
``KafkaCluster(directory, size=3).start()``, ``.bootstrap``, ``.nodes[i].kill()``,
``.nodes[i].start()``, ``.stop()``.
"""
import argparse
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

KAFKA_VERSION = os.environ.get("TRACKER_KAFKA_VERSION", "4.1.1")
LOG4J_VERSION = "2.24.3"      # the log4j Kafka 4.1 ships with; the binding must match it
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.6.1"
CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                     "tracker", f"kafka-{KAFKA_VERSION}")
STARTED_LINE = "Kafka Server started"

POM = """<project>
  <modelVersion>4.0.0</modelVersion>
  <groupId>tracker.test</groupId><artifactId>kafka-node</artifactId><version>1</version>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""

LOG4J2 = """status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {dir}/logs/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.state.name = state.change.logger
logger.state.level = WARN
"""


class NodeError(RuntimeError):
    pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require(tool):
    path = shutil.which(tool)
    if path is None:
        raise NodeError(f"{tool} is not installed: a Kafka test broker needs a JDK (17) and "
                        "Maven (`apt-get install openjdk-17-jdk-headless maven`)")
    return path


def resolve(quiet=True):
    """The directory holding kafka_2.13 and its runtime jars, resolved from
    Maven Central on the first call (cached after)."""
    lib = os.path.join(CACHE, "lib")
    marker = os.path.join(CACHE, "complete")
    if os.path.exists(marker):
        return lib
    mvn = require("mvn")
    require("java")
    os.makedirs(CACHE, exist_ok=True)
    work = tempfile.mkdtemp(prefix="resolve-", dir=CACHE)
    try:
        with open(os.path.join(work, "pom.xml"), "w") as fh:
            fh.write(POM.format(version=KAFKA_VERSION, log4j=LOG4J_VERSION))
        out = os.path.join(work, "lib")
        cmd = [mvn, "-B", "-f", os.path.join(work, "pom.xml"),
               f"{DEPENDENCY_PLUGIN}:copy-dependencies",
               f"-DoutputDirectory={out}", "-DincludeScope=runtime"]
        if quiet:
            cmd.insert(2, "-q")
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        jar = os.path.join(out, f"kafka_2.13-{KAFKA_VERSION}.jar")
        if proc.returncode != 0 or not os.path.exists(jar):
            raise NodeError(f"maven could not resolve kafka_2.13 {KAFKA_VERSION} "
                            f"(exit {proc.returncode}):\n{proc.stdout[-4000:]}")
        if os.path.exists(lib):
            shutil.rmtree(lib)
        os.rename(out, lib)
        with open(marker, "w") as fh:
            fh.write(KAFKA_VERSION + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return lib


def new_cluster_id():
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def properties_text(props):
    return "".join(f"{k}={v}\n" for k, v in props.items())


class KafkaNode:
    """One combined broker + controller in ``directory``.

    ``voters`` is the controller quorum ("1@127.0.0.1:port,..."), the same
    on every node of a cluster; ``extra`` adds or overrides server
    properties (more listeners, SASL, TLS)."""

    def __init__(self, directory, node_id, port, controller_port, voters, cluster_id,
                 replication=1, heap="256m", extra=None, listeners=None):
        self.dir = os.path.abspath(directory)
        self.node_id = node_id
        self.port = port
        self.controller_port = controller_port
        self.voters = voters
        self.cluster_id = cluster_id
        self.replication = replication
        self.heap = heap
        self.extra = dict(extra or {})
        self.listeners = dict(listeners or {})   # more listeners: {"SASL_SSL": port}
        self.proc = None
        self.pid = None

    @property
    def host(self):
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self):
        return os.path.join(self.dir, "logs", "server.log")

    def properties(self):
        r = self.replication
        more = "".join(f",{name}://127.0.0.1:{port}" for name, port in self.listeners.items())
        protocols = "".join(f",{name}:{name}" for name in self.listeners)
        props = {
            "process.roles": "broker,controller",
            "node.id": self.node_id,
            "controller.quorum.voters": self.voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},"
                         f"CONTROLLER://127.0.0.1:{self.controller_port}{more}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}{more}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
                                              + protocols,
            "log.dirs": os.path.join(self.dir, "data"),
            "num.partitions": 3,
            "default.replication.factor": r,
            "min.insync.replicas": max(1, r - 1),
            "offsets.topic.replication.factor": r,
            "offsets.topic.num.partitions": 3,
            "transaction.state.log.replication.factor": r,
            "transaction.state.log.min.isr": max(1, r - 1),
            "share.coordinator.state.topic.replication.factor": r,
            "share.coordinator.state.topic.min.isr": max(1, r - 1),
            "group.initial.rebalance.delay.ms": 0,
            "auto.create.topics.enable": "true",
            # a test broker: small segments and little memory
            "log.segment.bytes": 16 * 1024 * 1024,
            "num.network.threads": 2,
            "num.io.threads": 2,
        }
        props.update(self.extra)
        return props

    def _write_files(self):
        for sub in ("data", "logs"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        with open(os.path.join(self.dir, "server.properties"), "w") as fh:
            fh.write(properties_text(self.properties()))
        with open(os.path.join(self.dir, "log4j2.properties"), "w") as fh:
            fh.write(LOG4J2.format(dir=self.dir))

    def _java(self, lib, *args, tool=False):
        # a tool (the storage format) runs for a second: small heap, quick JIT
        memory = (["-Xmx128m", "-XX:TieredStopAtLevel=1"] if tool
                  else [f"-Xms{self.heap}", f"-Xmx{self.heap}", "-XX:+UseG1GC"])
        return [require("java"), *memory, "-Djava.awt.headless=true", "-Djava.net.preferIPv4Stack=true",
                f"-Dlog4j2.configurationFile={self.dir}/log4j2.properties",
                f"-Dkafka.logs.dir={self.dir}/logs", f"-Djava.io.tmpdir={self.dir}",
                "-cp", os.path.join(lib, "*"), *args]

    def format(self, lib, scram=()):
        """Format the storage once (KRaft needs it before the first start).
        ``scram``: ("SCRAM-SHA-512=[name=u,password=p]", ...) credentials."""
        if os.path.exists(os.path.join(self.dir, "data", "meta.properties")):
            return
        self._write_files()
        cmd = self._java(lib, "kafka.tools.StorageTool", "format", "-t", self.cluster_id,
                         "-c", os.path.join(self.dir, "server.properties"), tool=True)
        for cred in scram:
            cmd += ["--add-scram", cred]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            raise NodeError(f"kafka storage format failed ({proc.returncode}):\n"
                            f"{proc.stdout[-3000:]}")

    def launch(self, lib):
        """Start the JVM (returns at once; ``wait_started`` waits)."""
        self._write_files()
        self._log_offset = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        out = open(os.path.join(self.dir, "logs", "stdout.log"), "ab")
        self.proc = subprocess.Popen(
            self._java(lib, "kafka.Kafka", os.path.join(self.dir, "server.properties")),
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.dir,
            start_new_session=True)
        out.close()
        self.pid = self.proc.pid
        self.started_at = time.monotonic()

    def start(self, timeout=90):
        lib = resolve()
        self.launch(lib)
        self.wait_started(timeout)
        return self

    def wait_started(self, timeout=90):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise NodeError(f"kafka node {self.node_id} exited "
                                f"({self.proc.returncode}):\n{self.tail()}")
            if self._started_logged() and self.port_open():
                self.start_seconds = time.monotonic() - self.started_at
                return
            time.sleep(0.1)
        raise NodeError(f"kafka node {self.node_id} did not start within {timeout} s:\n"
                        + self.tail())

    def _started_logged(self):
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(self._log_offset)
                return STARTED_LINE.encode() in fh.read()
        except FileNotFoundError:
            return False

    def port_open(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def running(self):
        if self.proc is not None:
            return self.proc.poll() is None
        if not self.pid:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def tail(self, lines=40):
        text = ""
        for name in ("stdout.log", "server.log"):
            path = os.path.join(self.dir, "logs", name)
            if os.path.exists(path):
                with open(path, "rb") as fh:
                    text += f"--- {name}\n" + "\n".join(
                        fh.read().decode("utf-8", "replace").splitlines()[-lines:]) + "\n"
        return text

    def kill(self):
        """SIGKILL: the broker dies at once, as in a crash."""
        self._signal(signal.SIGKILL, 10)

    def stop(self, timeout=30):
        """SIGTERM (a controlled shutdown), SIGKILL after ``timeout``."""
        self._signal(signal.SIGTERM, timeout)

    def _signal(self, sig, timeout):
        if not self.running():
            return
        pid = self.proc.pid if self.proc is not None else self.pid
        os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.running():
            os.kill(pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()
        deadline = time.monotonic() + 10          # a restart reuses the port
        while self.port_open() and time.monotonic() < deadline:
            time.sleep(0.05)


class KafkaCluster:
    """``size`` nodes in ``directory``, each a broker and a controller voter;
    topics default to ``size`` replicas (at most 3) with min.insync.replicas
    one less. ``extra(node_id)`` returns more properties for a node,
    ``listeners(node_id)`` more listeners ({"SASL_SSL": port}); ``scram``
    holds SCRAM credentials for StorageTool's --add-scram."""

    def __init__(self, directory, size=1, heap="256m", extra=None, scram=(), listeners=None):
        self.dir = os.path.abspath(directory)
        self.state_path = os.path.join(self.dir, "cluster.json")
        state = {}
        if os.path.exists(self.state_path):
            with open(self.state_path) as fh:
                state = json.load(fh)
        self.size = size
        ports = state.get("ports") or [[free_port(), free_port()] for _ in range(size)]
        self.cluster_id = state.get("cluster_id") or new_cluster_id()
        voters = ",".join(f"{i + 1}@127.0.0.1:{c}" for i, (_, c) in enumerate(ports))
        self.scram = scram
        self.nodes = [KafkaNode(os.path.join(self.dir, f"node{i + 1}"), i + 1, p, c, voters,
                                self.cluster_id, replication=min(size, 3), heap=heap,
                                extra=extra(i + 1) if extra else None,
                                listeners=listeners(i + 1) if listeners else None)
                      for i, (p, c) in enumerate(ports)]
        self.pids = state.get("pids") or []
        os.makedirs(self.dir, exist_ok=True)
        with open(self.state_path, "w") as fh:
            json.dump({"ports": ports, "cluster_id": self.cluster_id,
                       "pids": self.pids}, fh)

    @property
    def bootstrap(self):
        return ",".join(n.host for n in self.nodes)

    @property
    def hosts(self):
        return [n.host for n in self.nodes]

    def start(self, timeout=120):
        """Format (first time), launch every node at once, wait for all."""
        lib = resolve()
        started = time.monotonic()
        for node in self.nodes:
            node.format(lib, self.scram)
        try:
            for node in self.nodes:
                node.launch(lib)
            for node in self.nodes:
                node.wait_started(timeout)
        except BaseException:
            self.stop(kill=True)         # no node left running behind a failed start
            raise
        self.start_seconds = time.monotonic() - started
        self.pids = [n.pid for n in self.nodes]
        with open(self.state_path) as fh:
            state = json.load(fh)
        state["pids"] = self.pids
        with open(self.state_path, "w") as fh:
            json.dump(state, fh)
        return self

    def stop(self, kill=False):
        """Stop every node (SIGTERM to all first, so none waits for another's
        controlled shutdown); ``kill``: SIGKILL, for throw-away data."""
        for node in self.nodes:
            if node.proc is None and node.pid is None and self.pids:
                node.pid = self.pids[node.node_id - 1]
            if node.running():
                pid = node.proc.pid if node.proc else node.pid
                os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
        for node in self.nodes:
            node.kill() if kill else node.stop()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("resolve", help="resolve and cache the jars")
    start = sub.add_parser("start", help="start brokers in DIR and wait for them")
    start.add_argument("dir")
    start.add_argument("--nodes", type=int, default=1)
    start.add_argument("--heap", default="256m")
    stop = sub.add_parser("stop", help="stop the brokers of DIR")
    stop.add_argument("dir")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "resolve":
            t0 = time.monotonic()
            lib = resolve(quiet=False)
            print(f"{lib}: {len(os.listdir(lib))} jars ({time.monotonic() - t0:.1f} s)")
        elif args.cmd == "start":
            cluster = KafkaCluster(args.dir, size=args.nodes, heap=args.heap).start()
            print(f"kafka {KAFKA_VERSION}: {cluster.bootstrap} "
                  f"(pids {' '.join(map(str, cluster.pids))}, "
                  f"started in {cluster.start_seconds:.1f} s)")
        else:
            with open(os.path.join(os.path.abspath(args.dir), "cluster.json")) as fh:
                size = len(json.load(fh)["ports"])
            KafkaCluster(args.dir, size=size).stop()
            print("stopped")
    except (NodeError, FileNotFoundError) as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
