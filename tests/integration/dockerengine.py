"""A private Docker engine for the Swarm test: Debian's Docker engine package, started and
stopped by the test itself.

- Data root: ``~/.cache/tracker/docker`` (``$TRACKER_DOCKER_ROOT``). Images and
  the build cache outlive the run, so a second run rebuilds only what changed;
  a fresh machine starts empty. Whatever a killed run left there (a swarm,
  containers, volumes) is removed at start; images are kept.
- Exec root, socket, pid file and the daemon's log: a temporary directory.
- ``DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1``: Swarm would otherwise try to pull
  every service's image from a registry before using the local one.
- The client is the engine's own (``/usr/bin/docker``, same version, BuildKit
  built in); a newer ``docker`` earlier on PATH may lack buildx.

``stop()`` leaves the swarm, stops the daemon (SIGKILL after a grace period),
ends any process left under its exec root by pid, and deletes the bridges it
made, so nothing keeps running after the test. If the test run itself is
killed, ``python tests/integration/dockerengine.py cleanup`` (.ci/run calls it)
does the same for the engine it left, found by the state file in the data root.
"""
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

DOCKERD = shutil.which("dockerd") or "/usr/sbin/dockerd"
CLIENT = "/usr/bin/docker"
CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                     "tracker")
DATA_ROOT = os.environ.get("TRACKER_DOCKER_ROOT") or os.path.join(CACHE, "docker")
BRIDGES = ("docker0", "docker_gwbridge")
STATE = ".engine.json"          # in the data root: which dockerd a run started


def missing_tools():
    """What this machine lacks to run the Swarm test (empty: nothing)."""
    needed = {"dockerd": DOCKERD, "docker": CLIENT, "debootstrap": "/usr/sbin/debootstrap",
              "java": shutil.which("java") or "/usr/bin/java",
              "mvn": shutil.which("mvn") or "/usr/bin/mvn"}
    return [name for name, path in needed.items() if not os.path.exists(path)]


class DockerError(AssertionError):
    pass


class Engine:
    def __init__(self, data_root=DATA_ROOT):
        self.data_root = data_root
        self.run_dir = None
        self.proc = None            # our dockerd, when this process started it
        self.pid = self.start_time = None
        self.lock = None

    @property
    def host(self):
        return f"unix://{self.run_dir}/docker.sock"

    def env(self):
        """Environment for a docker CLI (or scripts/swarm_images.sh) talking to this engine."""
        env = dict(os.environ, DOCKER_HOST=self.host, DOCKER=CLIENT)
        env.pop("DOCKER_CONTEXT", None)
        return env

    def docker(self, *args, check=True, timeout=120, stdin=None):
        done = subprocess.run([CLIENT, *args], capture_output=True, text=True, env=self.env(),
                              timeout=timeout, input=stdin)
        if check and done.returncode != 0:
            raise DockerError(f"docker {' '.join(args)} exited {done.returncode}:\n"
                              f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done

    # ---- lifecycle ---------------------------------------------------------
    def start(self, timeout=60):
        os.makedirs(self.data_root, exist_ok=True)
        self.lock = open(os.path.join(self.data_root, ".tracker-test.lock"), "w")
        try:
            fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DockerError(f"another test run uses {self.data_root}") from None
        # Short: the containerd socket path under it must fit a unix socket name.
        self.run_dir = tempfile.mkdtemp(prefix="trk-dockerd.", dir="/tmp")
        log = open(os.path.join(self.run_dir, "dockerd.log"), "wb")
        env = dict(os.environ, DOCKER_SERVICE_PREFER_OFFLINE_IMAGE="1")
        self.proc = subprocess.Popen(
            [DOCKERD, "--data-root", self.data_root, "--exec-root", self.run_dir,
             "-H", self.host, "--pidfile", os.path.join(self.run_dir, "docker.pid"),
             # Ports of plain containers: loopback only (Swarm's go by docker_gwbridge, below).
             "--ip", "127.0.0.1"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True)
        log.close()
        self.pid = self.proc.pid
        self._save_state()
        deadline = time.monotonic() + timeout
        while self.docker("info", check=False, timeout=10).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise DockerError(f"dockerd did not come up:\n{self.log_tail()}")
            time.sleep(0.3)
        self._clear_leftovers()
        return self

    def _clear_leftovers(self):
        """A killed run's swarm, containers, volumes and networks (not images)."""
        self.leave_swarm()
        ids = self.docker("ps", "-aq").stdout.split()
        if ids:
            self.docker("rm", "-f", *ids, timeout=300)
        self.docker("volume", "prune", "-f")
        self.docker("network", "prune", "-f")

    def leave_swarm(self):
        state = self.docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()
        if state not in ("inactive", ""):
            self.docker("swarm", "leave", "--force", timeout=120)

    def init_swarm(self):
        """A one-node swarm on loopback. docker_gwbridge, which carries the
        tasks' host-mode published ports, is made first with a loopback host
        binding, so those ports answer on 127.0.0.1 only."""
        self.docker("network", "rm", "docker_gwbridge", check=False)
        self.docker("network", "create", "--driver", "bridge",
                    "-o", "com.docker.network.bridge.name=docker_gwbridge",
                    "-o", "com.docker.network.bridge.enable_icc=false",
                    "-o", "com.docker.network.bridge.enable_ip_masquerade=true",
                    "-o", "com.docker.network.bridge.host_binding_ipv4=127.0.0.1",
                    "docker_gwbridge")
        self.docker("swarm", "init", "--advertise-addr", "127.0.0.1")
        return self.docker("info", "--format", "{{.Swarm.NodeID}}").stdout.strip()

    def stop(self, grace=30):
        if self.run_dir is None:
            return
        try:
            if self._alive():
                children = self._children()     # docker-proxy, containerd
                try:
                    self.leave_swarm()
                except (DockerError, subprocess.TimeoutExpired):
                    pass
                self._terminate(grace)
                self._end(children)
            self._end(self._under_run_dir())
            for bridge in BRIDGES:
                subprocess.run(["ip", "link", "delete", bridge], capture_output=True)
        finally:
            try:
                os.unlink(os.path.join(self.data_root, STATE))
            except FileNotFoundError:
                pass
            if self.lock is not None:
                self.lock.close()
                self.lock = None
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self.proc, self.pid, self.run_dir = None, None, None

    @classmethod
    def leftover(cls, data_root=DATA_ROOT):
        """The engine a killed test run left running (its state file names
        it), or None."""
        try:
            with open(os.path.join(data_root, STATE)) as fh:
                state = json.load(fh)
        except (OSError, ValueError):
            return None
        engine = cls(data_root)
        engine.pid, engine.start_time, engine.run_dir = (state["pid"], state["start"],
                                                         state["run_dir"])
        return engine

    def _save_state(self):
        self.start_time = self._processes()[self.pid][1]
        with open(os.path.join(self.data_root, STATE), "w") as fh:
            json.dump({"pid": self.pid, "start": self.start_time, "run_dir": self.run_dir}, fh)

    def _alive(self):
        if self.proc is not None:
            return self.proc.poll() is None
        seen = self._processes().get(self.pid)
        return seen is not None and seen[1] == self.start_time

    def _terminate(self, grace):
        """SIGTERM dockerd (it stops what runs), SIGKILL after ``grace`` s."""
        os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self._alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        if self._alive():
            os.kill(self.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)

    @staticmethod
    def _processes():
        """{pid: (parent pid, start time, command line)} of every process."""
        table = {}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    cmdline = fh.read()
            except (OSError, IndexError):
                continue
            table[int(pid)] = (int(fields[1]), fields[19], cmdline)
        return table

    def _children(self):
        """(pid, start time) of dockerd's children (containerd, docker-proxy)."""
        return [(pid, start) for pid, (ppid, start, _) in self._processes().items()
                if ppid == self.pid]

    def _under_run_dir(self):
        """(pid, start time) of what has our exec root on its command line
        (containerd and its shims)."""
        return [(pid, start) for pid, (_, start, cmdline) in self._processes().items()
                if self.run_dir.encode() in cmdline]

    def _end(self, processes):
        """SIGKILL those of ``processes`` still alive; the start time makes
        sure a pid is still the process we saw, not a reuse."""
        alive = self._processes()
        for pid, start in processes:
            if pid in alive and alive[pid][1] == start:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def log_tail(self, lines=40):
        try:
            with open(os.path.join(self.run_dir, "dockerd.log"), "rb") as fh:
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def prune_images(self):
        """Images a rebuild replaced, and build cache beyond a few GB."""
        self.docker("image", "prune", "-f", timeout=300, check=False)
        self.docker("builder", "prune", "-f", "--keep-storage", "4GB", timeout=300, check=False)

    def inspect(self, *ids):
        return json.loads(self.docker("inspect", *ids).stdout)


def main(argv):
    if argv[1:] != ["cleanup"]:
        print(f"usage: {argv[0]} cleanup", file=sys.stderr)
        return 2
    engine = Engine.leftover()
    if engine is None:
        print("no engine left running")
        return 0
    pid, running = engine.pid, engine._alive()
    engine.stop()
    print(f"stopped the engine a test run left (pid {pid})" if running
          else "removed the state of an engine no longer running")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
