#!/usr/bin/env python3
"""A real Cassandra 5.0 node, or a cluster of them, for tests, CI and benchmarks.

No tarball and no Docker: the server's own jars come from Maven Central
(``org.apache.cassandra:cassandra-all`` with its runtime dependencies, via a
pinned maven-dependency-plugin) into a cache under ``~/.cache``, and the node
is ``java -cp 'lib/*' org.apache.cassandra.service.CassandraDaemon`` with the
flags Java 17 needs, a generated ``cassandra.yaml`` and its own data
directory. Every port is a free one (several test runs may share a machine).
A single node listens on 127.0.0.1; a cluster (``CassandraCluster``) puts
node i on the loopback alias 127.0.0.(2+i) (Linux answers on all of
127.0.0.0/8 without setup), every node on the same ports, with its own data
directory and JMX port, balanced tokens and the first node as seed.

    python scripts/cassandra_node.py resolve            # fetch + cache the jars
    python scripts/cassandra_node.py start DIR [--port N] [--heap 1g] [--nodes 3]
    python scripts/cassandra_node.py stop DIR

``start`` returns once the node accepts CQL (it polls; no fixed sleeps) and
prints the native port; the node keeps running in the background until
``stop``. From Python: ``CassandraNode(directory).start()`` / ``.stop()``.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

CASSANDRA_VERSION = os.environ.get("TRACKER_CASSANDRA_VERSION", "5.0.8")
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.6.1"
CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                     "tracker", f"cassandra-{CASSANDRA_VERSION}")
MAIN_CLASS = "org.apache.cassandra.service.CassandraDaemon"
# A native-protocol v4 request frame: version, flags, stream 0, opcode OPTIONS, empty
# body. A ready server answers with a v4 response frame (0x84) of opcode SUPPORTED.
CQL_OPTIONS = bytes([0x04, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00])
CQL_SUPPORTED = 0x06

POM = """<project>
  <modelVersion>4.0.0</modelVersion>
  <groupId>tracker.test</groupId><artifactId>cassandra-node</artifactId><version>1</version>
  <dependencies>
    <dependency>
      <groupId>org.apache.cassandra</groupId><artifactId>cassandra-all</artifactId>
      <version>{version}</version>
    </dependency>
  </dependencies>
</project>
"""

ADD_EXPORTS = (
    "java.base/jdk.internal.misc", "java.base/jdk.internal.ref", "java.base/sun.nio.ch",
    "java.management.rmi/com.sun.jmx.remote.internal.rmi",
    "java.management/com.sun.jmx.remote.security", "java.rmi/sun.rmi.registry",
    "java.rmi/sun.rmi.server", "java.sql/java.sql", "java.base/java.lang.ref",
    "jdk.unsupported/sun.misc", "jdk.compiler/com.sun.tools.javac.file",
    "jdk.attach/sun.tools.attach",
)
ADD_OPENS = (
    "java.base/java.lang.module", "java.base/jdk.internal.loader", "java.base/jdk.internal.ref",
    "java.base/jdk.internal.reflect", "java.base/jdk.internal.math",
    "java.base/jdk.internal.module", "java.base/jdk.internal.util.jar",
    "jdk.management/com.sun.management.internal", "java.base/sun.nio.ch", "java.base/java.io",
    "java.base/java.nio", "java.base/java.lang", "java.base/java.lang.reflect",
    "java.base/java.math", "java.base/java.net", "java.base/java.util",
    "java.base/java.util.concurrent", "java.base/java.util.concurrent.atomic",
    "java.rmi/sun.rmi.transport.tcp", "jdk.compiler/com.sun.tools.javac",
)

YAML = """\
cluster_name: {cluster}
num_tokens: 1
initial_token: {token}
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
dynamic_snitch: false
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "{seed}:{storage_port}"
listen_address: {address}
rpc_address: {address}
storage_port: {storage_port}
native_transport_port: {native_port}
start_native_transport: true
auto_bootstrap: false
data_file_directories:
  - {dir}/data
commitlog_directory: {dir}/commitlog
saved_caches_directory: {dir}/saved_caches
hints_directory: {dir}/hints
cdc_raw_directory: {dir}/cdc_raw
{commitlog_sync}
auto_snapshot: false
snapshot_before_compaction: false
authenticator: AllowAllAuthenticator
authorizer: AllowAllAuthorizer
{engine}"""

# Cassandra 5's storage engine as its conf/cassandra_latest.yaml sets it for new
# clusters (the default yaml keeps 4.x's): trie memtables held off-heap, the
# BTI sstable format, the unified compaction strategy. Nodes of 4.x cannot
# read the sstables it writes, hence storage_compatibility_mode NONE.
ENGINES = {
    "compatible": "",
    "latest": """\
memtable:
  configurations:
    skiplist:
      class_name: SkipListMemtable
    trie:
      class_name: TrieMemtable
    default:
      inherits: trie
memtable_allocation_type: offheap_objects
sstable:
  selected_format: bti
default_compaction:
  class_name: UnifiedCompactionStrategy
  parameters:
    scaling_parameters: T4
    max_sstables_to_compact: 64
    target_sstable_size: 1GiB
    sstable_growth: 0.3333333333333333
    min_sstable_size: 100MiB
storage_compatibility_mode: NONE
""",
}

LOGBACK = """<configuration scan="false">
  <appender name="FILE" class="ch.qos.logback.core.FileAppender">
    <file>{dir}/logs/system.log</file>
    <encoder><pattern>%-5level [%thread] %date{{ISO8601}} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="FILE"/></root>
</configuration>
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
        raise NodeError(f"{tool} is not installed: a Cassandra test node needs a JDK "
                        "(java 11 or 17) and Maven (`apt-get install openjdk-17-jdk-headless maven`)")
    return path


def resolve(quiet=True):
    """Return the directory holding cassandra-all and its runtime jars,
    resolving them from Maven Central on the first call (cached after)."""
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
            fh.write(POM.format(version=CASSANDRA_VERSION))
        out = os.path.join(work, "lib")
        cmd = [mvn, "-B", "-f", os.path.join(work, "pom.xml"),
               f"{DEPENDENCY_PLUGIN}:copy-dependencies",
               f"-DoutputDirectory={out}", "-DincludeScope=runtime"]
        if quiet:
            cmd.insert(2, "-q")
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        jar = os.path.join(out, f"cassandra-all-{CASSANDRA_VERSION}.jar")
        if proc.returncode != 0 or not os.path.exists(jar):
            raise NodeError(f"maven could not resolve cassandra-all {CASSANDRA_VERSION} "
                            f"(exit {proc.returncode}):\n{proc.stdout[-4000:]}")
        if os.path.exists(lib):
            shutil.rmtree(lib)
        os.rename(out, lib)
        with open(marker, "w") as fh:
            fh.write(CASSANDRA_VERSION + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return lib


def free_port_on(addresses):
    """A port free on every one of ``addresses`` (cluster nodes share ports)."""
    for _ in range(50):
        port = free_port()
        try:
            for address in addresses:
                with socket.socket() as s:
                    s.bind((address, port))
            return port
        except OSError:
            continue
    raise NodeError(f"no port free on all of {addresses}")


def jvm_flags(lib, directory, heap, unsafe_system=True):
    jamm = [f for f in os.listdir(lib) if f.startswith("jamm-") and f.endswith(".jar")]
    flags = [f"-Xms{heap}", f"-Xmx{heap}", "-Xss256k", "-XX:+UseG1GC",
             "-XX:+ExitOnOutOfMemoryError", f"-XX:HeapDumpPath={directory}/logs",
             "-Djdk.attach.allowAttachSelf=true", "-Dio.netty.tryReflectionSetAccessible=true",
             "-Djava.net.preferIPv4Stack=true", "-Dcassandra-foreground=yes",
             f"-Dcassandra.config=file://{directory}/cassandra.yaml",
             f"-Dcassandra.storagedir={directory}", f"-Dcassandra.logdir={directory}/logs",
             f"-Dlogback.configurationFile={directory}/logback.xml",
             "-Dcassandra.libjemalloc=-",
             f"-Djava.io.tmpdir={directory}/tmp", f"-Djna.tmpdir={directory}/tmp",
             # test-node start-up speed: nothing to wait for (tokens are in the yaml)
             "-Dcassandra.skip_wait_for_gossip_to_settle=0",
             "-Dcassandra.ring_delay_ms=1000", "-Dcassandra.superuser_setup_delay_ms=0",
             "-Dcassandra.load_ring_state=false"]
    if unsafe_system:     # faster schema changes; a SIGKILLed node would forget recent ones
        flags.append("-Dcassandra.unsafesystem=true")
    if jamm:
        flags.append(f"-javaagent:{os.path.join(lib, jamm[0])}")
    flags += [f"--add-exports={m}=ALL-UNNAMED" for m in ADD_EXPORTS]
    flags += [f"--add-opens={m}=ALL-UNNAMED" for m in ADD_OPENS]
    return flags


class CassandraNode:
    """One node in ``directory`` (created; data kept across stop/start)."""

    def __init__(self, directory, native_port=None, storage_port=None, heap="1g",
                 address="127.0.0.1", seed=None, token=0, cluster=None, unsafe_system=True,
                 durable_commitlog=False, engine="compatible"):
        self.dir = os.path.abspath(directory)
        if engine not in ENGINES:
            raise NodeError(f"unknown storage engine {engine!r}: one of {', '.join(ENGINES)}")
        self.engine = engine
        self.unsafe_system = unsafe_system
        # A node that will be SIGKILLed must fsync its commit log before it
        # acknowledges: with the periodic sync a counter leader that loses
        # its last seconds of log reuses a counter clock after the restart,
        # and an increment acknowledged before the kill is lost (seen in the
        # Swarm test; docker/cassandra/entrypoint.sh does the same).
        self.commitlog_sync = ("commitlog_sync: group\ncommitlog_sync_group_window: 15ms"
                               if durable_commitlog else
                               "commitlog_sync: periodic\ncommitlog_sync_period: 10000ms")
        self.state_path = os.path.join(self.dir, "node.json")
        state = {}
        if os.path.exists(self.state_path):
            with open(self.state_path) as fh:
                state = json.load(fh)
        self.native_port = native_port or state.get("native_port") or free_port()
        self.storage_port = storage_port or state.get("storage_port") or free_port()
        self.jmx_port = state.get("jmx_port") or free_port()
        self.address, self.seed, self.token = address, seed or address, token
        self.cluster = cluster or f"tracker-test-{self.native_port}"
        self.heap = heap
        self.proc = None
        self.pid = state.get("pid")

    @property
    def log_path(self):
        return os.path.join(self.dir, "logs", "system.log")

    def _write_files(self):
        for sub in ("data", "commitlog", "saved_caches", "hints", "cdc_raw", "logs", "tmp"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        with open(os.path.join(self.dir, "cassandra.yaml"), "w") as fh:
            fh.write(YAML.format(cluster=self.cluster, dir=self.dir, address=self.address,
                                 seed=self.seed, token=self.token,
                                 storage_port=self.storage_port,
                                 native_port=self.native_port,
                                 commitlog_sync=self.commitlog_sync,
                                 engine=ENGINES[self.engine]))
        with open(os.path.join(self.dir, "logback.xml"), "w") as fh:
            fh.write(LOGBACK.format(dir=self.dir))

    def _save_state(self):
        with open(self.state_path, "w") as fh:
            json.dump({"native_port": self.native_port, "storage_port": self.storage_port,
                       "jmx_port": self.jmx_port, "pid": self.pid}, fh)

    def start(self, timeout=180):
        """Start the node and return once it accepts CQL connections."""
        java = require("java")
        lib = resolve()
        os.makedirs(self.dir, exist_ok=True)
        self._write_files()
        out = open(os.path.join(self.dir, "logs", "stdout.log"), "ab")
        self.proc = subprocess.Popen(
            [java, *jvm_flags(lib, self.dir, self.heap, self.unsafe_system),
             f"-Dcassandra.jmx.local.port={self.jmx_port}", "-cp", os.path.join(lib, "*"),
             MAIN_CLASS],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=self.dir, start_new_session=True)
        out.close()
        self.pid = self.proc.pid
        self._save_state()
        started = time.monotonic()
        self.wait_cql(timeout)
        self.start_seconds = time.monotonic() - started
        return self

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

    def port_open(self):
        try:
            with socket.create_connection((self.address, self.native_port), timeout=1):
                return True
        except OSError:
            return False

    def answers_cql(self):
        """True once the native transport answers a CQL OPTIONS request with
        SUPPORTED: the server speaks CQL, not merely holds the port."""
        try:
            with socket.create_connection((self.address, self.native_port), timeout=2) as s:
                s.sendall(CQL_OPTIONS)
                head = b""
                while len(head) < 5:
                    chunk = s.recv(9 - len(head))
                    if not chunk:
                        return False
                    head += chunk
                return head[0] == 0x84 and head[4] == CQL_SUPPORTED
        except OSError:
            return False

    def wait_cql(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise NodeError(f"cassandra exited ({self.proc and self.proc.returncode}):\n"
                                + self.tail())
            if self.answers_cql():
                return
            time.sleep(0.2)
        raise NodeError(f"cassandra did not accept CQL within {timeout} s:\n" + self.tail())

    def tail(self, lines=40):
        text = ""
        for name in ("stdout.log", "system.log"):
            path = os.path.join(self.dir, "logs", name)
            if os.path.exists(path):
                with open(path, "rb") as fh:
                    text += f"--- {name}\n" + "\n".join(
                        fh.read().decode("utf-8", "replace").splitlines()[-lines:]) + "\n"
        return text

    def kill(self):
        """SIGKILL: the node dies as in a crash (its commit log is replayed
        at the next start)."""
        if self.running():
            pid = self.proc.pid if self.proc is not None else self.pid
            os.kill(pid, signal.SIGKILL)
            if self.proc is not None:
                self.proc.wait()
            else:
                while self.running():
                    time.sleep(0.05)

    def stop(self, timeout=60):
        """SIGTERM (Cassandra flushes and exits), SIGKILL after ``timeout``."""
        if not self.running():
            return
        pid = self.proc.pid if self.proc is not None else self.pid
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None:
                if self.proc.poll() is not None:
                    break
            elif not self.running():
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
            if self.proc is not None:
                self.proc.wait()
        # the port must be closed before a restart reuses it
        deadline = time.monotonic() + 10
        while self.port_open() and time.monotonic() < deadline:
            time.sleep(0.1)


class CassandraCluster:
    """``size`` nodes in ``directory``/node<i>, on 127.0.0.2, .3, ... with
    balanced tokens (``num_tokens: 1``), the first node as seed, one cluster
    name, the same native and storage ports on every address. Nodes start one
    after another (a node joining while another does waits for it)."""

    def __init__(self, directory, size=3, heap="1g", engine="compatible"):
        self.dir = os.path.abspath(directory)
        os.makedirs(self.dir, exist_ok=True)
        state_path = os.path.join(self.dir, "cluster.json")
        state = {}
        if os.path.exists(state_path):
            with open(state_path) as fh:
                state = json.load(fh)
        size = state.get("size", size)
        self.addresses = [f"127.0.0.{2 + i}" for i in range(size)]
        native = state.get("native_port") or free_port_on(self.addresses)
        storage = state.get("storage_port") or free_port_on(self.addresses)
        with open(state_path, "w") as fh:
            json.dump({"size": size, "native_port": native, "storage_port": storage}, fh)
        self.native_port = native
        step = 2 ** 64 // size
        self.nodes = [CassandraNode(os.path.join(self.dir, f"node{i}"), native_port=native,
                                    storage_port=storage, heap=heap, address=address,
                                    seed=self.addresses[0], token=-2 ** 63 + i * step,
                                    cluster=f"tracker-cluster-{native}",
                                    unsafe_system=False,     # nodes are killed: keep schema
                                    durable_commitlog=True,  # ... and counters
                                    engine=engine)
                      for i, address in enumerate(self.addresses)]

    def start(self, timeout=180):
        started = time.monotonic()
        for node in self.nodes:
            if not node.running():
                node.start(timeout)
        self.start_seconds = time.monotonic() - started
        return self

    def pids(self):
        return [n.pid for n in self.nodes if n.running()]

    def stop(self):
        for node in reversed(self.nodes):
            node.stop()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("resolve", help="resolve and cache the jars")
    start = sub.add_parser("start", help="start a node in DIR and wait for CQL")
    start.add_argument("dir")
    start.add_argument("--port", type=int, help="native (CQL) port, default: a free one")
    start.add_argument("--heap", default="1g")
    start.add_argument("--nodes", type=int, default=1,
                       help="more than 1: a cluster on 127.0.0.2, .3, ... (RF up to --nodes)")
    start.add_argument("--engine", default="compatible", choices=sorted(ENGINES),
                       help="storage engine: Cassandra's default (4.x-compatible) or "
                            "cassandra_latest.yaml's (trie memtables, BTI, UCS)")
    stop = sub.add_parser("stop", help="stop the node of DIR")
    stop.add_argument("dir")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "resolve":
            t0 = time.monotonic()
            lib = resolve(quiet=False)
            print(f"{lib}: {len(os.listdir(lib))} jars ({time.monotonic() - t0:.1f} s)")
        elif args.cmd == "start" and args.nodes > 1:
            cluster = CassandraCluster(args.dir, size=args.nodes, heap=args.heap,
                                       engine=args.engine)
            cluster.start()
            for node in cluster.nodes:
                node.proc = None      # detach: the nodes outlive this command
            print(f"cassandra {CASSANDRA_VERSION}: {args.nodes} nodes accept CQL on "
                  f"{', '.join(cluster.addresses)} port {cluster.native_port} "
                  f"(started in {cluster.start_seconds:.1f} s)")
        elif args.cmd == "start":
            node = CassandraNode(args.dir, native_port=args.port, heap=args.heap,
                                 engine=args.engine)
            node.proc = None
            node.start()
            node.proc = None  # detach: the node outlives this command
            print(f"cassandra {CASSANDRA_VERSION} accepts CQL on 127.0.0.1:{node.native_port} "
                  f"(pid {node.pid}, started in {node.start_seconds:.1f} s)")
        elif os.path.exists(os.path.join(args.dir, "cluster.json")):
            CassandraCluster(args.dir).stop()
            print("stopped")
        else:
            CassandraNode(args.dir).stop()
            print("stopped")
    except NodeError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
