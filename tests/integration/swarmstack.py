"""docker-stack.yml deployed on the test's one-node swarm, and what the Swarm
test asks of it: its tasks, their published ports, kills, recovery checks,
reading the stores from inside, CPU used per service.

The stack is deployed as a user would, with ``docker stack deploy -c
docker-stack.yml -c tests/integration/swarm/stack-override.yml``, on images
built by scripts/swarm_images.sh, with the TLS secrets the stack expects.
"""
import datetime
import json
import os
import re
import socket
import ssl
import subprocess
import time
import http.client

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STACK_FILE = os.path.join(REPO, "docker-stack.yml")
OVERRIDE = os.path.join(REPO, "tests", "integration", "swarm", "stack-override.yml")
INSIDE = os.path.join(REPO, "tests", "integration", "swarm", "inside.py")
IMAGES_SCRIPT = os.path.join(REPO, "scripts", "swarm_images.sh")
NAME = "tracker"
LONG_RUNNING = ["collector", "nats1", "nats2", "nats3", "cassandra1", "cassandra2", "cassandra3"]
NODE_LABELS = ["tracker.collector", "tracker.nats1", "tracker.nats2", "tracker.nats3",
               "tracker.cassandra1", "tracker.cassandra2", "tracker.cassandra3"]
CGROUP_CPU = "/sys/fs/cgroup/cpuacct/docker/{}/cpuacct.usage"


def build_images(engine, tag="swarm-test", timeout=1800):
    """scripts/swarm_images.sh against ``engine``: {variable: image} for the stack."""
    done = subprocess.run([IMAGES_SCRIPT, tag], capture_output=True, text=True,
                          env=engine.env(), timeout=timeout, cwd=REPO)
    if done.returncode != 0:
        raise AssertionError(f"swarm_images.sh exited {done.returncode}:\n"
                             f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}")
    print(done.stderr.strip())
    return dict(line.split("=", 1) for line in done.stdout.split() if "=" in line)


def wait_until(check, timeout, what, interval=0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Stack:
    def __init__(self, engine, images, cert, key):
        self.engine = engine
        self.images = images
        self.cert, self.key = cert, key
        self.docker = engine.docker
        self.tls = ssl.create_default_context(cafile=cert)

    # ---- deploy / remove ----------------------------------------------------
    def deploy(self, node_id):
        labels = [a for label in NODE_LABELS for a in ("--label-add", f"{label}=true")]
        self.docker("node", "update", *labels, node_id)
        self.docker("secret", "create", "tracker_tls_cert", self.cert)
        self.docker("secret", "create", "tracker_tls_key", self.key)
        env = dict(self.engine.env(), **self.images,
                   # HTTPS in host mode on a free port per task (no IPVS for the
                   # mesh here); the plain port, unused by the test, stays on the
                   # (inert) mesh at a free port of the host.
                   TRACKER_HTTPS_MODE="host", TRACKER_HTTPS_PORT="0",
                   TRACKER_HTTP_PORT=str(free_port()))
        done = subprocess.run(
            ["/usr/bin/docker", "stack", "deploy", "--resolve-image", "never",
             "-c", STACK_FILE, "-c", OVERRIDE, NAME],
            capture_output=True, text=True, env=env, timeout=120, cwd=REPO)
        if done.returncode != 0:
            raise AssertionError(f"stack deploy failed:\n{done.stdout}\n{done.stderr}")

    def remove(self):
        self.docker("stack", "rm", NAME, check=False, timeout=120)
        # Cassandra's stop grace is 2 minutes; the tasks go once stopped.
        try:
            wait_until(lambda: not self.docker("ps", "-q").stdout.split(), 180,
                       "the stack's containers to stop")
        finally:
            self.docker("volume", "prune", "-f", check=False)

    # ---- tasks ---------------------------------------------------------------
    def containers(self, service):
        """Running containers of ``service``: [{id, task, slot, name, port}]
        (``port``: the published host port of 8443, if any)."""
        done = self.docker("ps", "--no-trunc", "--filter",
                           f"label=com.docker.swarm.service.name={NAME}_{service}",
                           "--format", "{{.ID}}\t{{.Names}}\t{{.Ports}}")
        found = []
        for line in done.stdout.splitlines():
            cid, name, ports = (line.split("\t") + ["", ""])[:3]
            match = re.search(r":(\d+)->8443/tcp", ports)
            slot = int(name.split(".")[1]) if name.count(".") >= 2 else 0
            found.append({"id": cid, "name": name, "slot": slot,
                          "port": int(match.group(1)) if match else None})
        return found

    def collector_ports(self):
        return {c["id"]: c["port"] for c in self.containers("collector") if c["port"]}

    def replicas(self):
        done = self.docker("service", "ls", "--format", "{{.Name}} {{.Replicas}}")
        out = {}
        for line in done.stdout.splitlines():
            name, replicas = line.split()[:2]
            running, wanted = replicas.split("/")
            out[name[len(NAME) + 1:]] = (int(running), int(wanted))
        return out

    def schema_complete(self):
        done = self.docker("service", "ps", f"{NAME}_schema", "--format", "{{.CurrentState}}")
        return done.stdout.startswith("Complete")

    def kill(self, service, slot=None):
        """`docker kill` one running container of ``service``; (container, time)."""
        running = [c for c in self.containers(service) if slot is None or c["slot"] == slot]
        victim = running[0]
        self.docker("kill", victim["id"])
        return victim, time.monotonic()

    def replaced(self, service, victim):
        """A running container of ``service`` in the victim's slot, other than it."""
        for c in self.containers(service):
            if c["slot"] == victim["slot"] and c["id"] != victim["id"]:
                return c
        return None

    # ---- probes --------------------------------------------------------------
    def ready(self, port):
        """The collector on host ``port`` answers /ready with 200."""
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=self.tls, timeout=5)
        try:
            conn.request("GET", "/ready")
            return conn.getresponse().status == 200
        except (OSError, ssl.SSLError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def exec_ok(self, container, *command):
        return self.docker("exec", container, *command, check=False, timeout=30).returncode == 0

    def nats_healthy(self, container):
        """Full /healthz: this server's JetStream is current with the cluster."""
        return self.exec_ok(container, "wget", "-q", "-O", "/dev/null",
                            "http://127.0.0.1:8222/healthz")

    def cassandra_accepts(self, container):
        return self.exec_ok(container, "bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9042")

    def inside(self, command, timeout=300, rounds=3):
        """tests/integration/swarm/inside.py COMMAND in a running collector
        (another one, or again, if it fails: a store pausing under load)."""
        with open(INSIDE) as fh:
            script = fh.read()
        last = None
        for _ in range(rounds):
            for c in self.containers("collector"):
                done = self.docker("exec", "-i", c["id"], "/opt/tracker/bin/python", "-",
                                   command, stdin=script, check=False, timeout=timeout)
                if done.returncode == 0:
                    return json.loads(done.stdout)
                last = done
            time.sleep(2)
        raise AssertionError(f"inside.py {command} failed: "
                             f"{last.stderr[-3000:] if last else 'no collector running'}")

    def cpu_seconds(self):
        """{service: CPU seconds used so far by its running containers}."""
        done = self.docker("ps", "--no-trunc", "--format",
                           '{{.ID}} {{.Label "com.docker.swarm.service.name"}}')
        out = {}
        for line in done.stdout.splitlines():
            cid, service = line.split()
            try:
                with open(CGROUP_CPU.format(cid)) as fh:
                    used = int(fh.read()) / 1e9
            except OSError:
                continue
            key = re.sub(r"\d+$", "", service[len(NAME) + 1:])
            out[key] = out.get(key, 0.0) + used
        return out

    def gossip_stuck(self, service, backlog=50):
        """The running containers of ``service`` (a Cassandra node) whose
        gossip stage has had at least ``backlog`` tasks pending in the last
        warning of the last 20 s of its log: a node whose bootstrap has hung
        (seen here after "JOINING: sleeping ... for pending range setup"; the
        backlog then grows by one a second; a healthy node's stays in single
        figures). A restart of that node alone lets the cluster form. The
        last 20 s rather than the last line: a stuck node's status dumps
        (StatusLogger, a hundred lines) come between the warnings."""
        stuck = []
        for c in self.containers(service):
            done = self.docker("logs", "--since", "20s", c["id"], check=False, timeout=30)
            found = re.findall(r"Gossip stage has (\d+) pending tasks", done.stdout + done.stderr)
            if found and int(found[-1]) >= backlog:
                stuck.append(c)
        return stuck

    def startup_hung(self, service, started_ok, after=180):
        """The running containers of ``service`` (a Cassandra node) up for
        more than ``after`` s that have not logged "Startup complete" (healthy
        nodes here: 40-90 s): a bootstrap whose main thread hung after
        "JOINING: sleeping ... for pending range setup" with no gossip backlog
        (seen 2026-12-01). ``started_ok``: ids already seen complete, kept by
        the caller so their logs are not read again."""
        hung = []
        for c in self.containers(service):
            if c["id"] in started_ok:
                continue
            done = self.docker("logs", c["id"], check=False, timeout=30)
            if "Startup complete" in done.stdout + done.stderr:
                started_ok.add(c["id"])
            elif self.up_seconds(c["id"]) > after:
                hung.append(c)
        return hung

    def up_seconds(self, container):
        done = self.docker("inspect", "-f", "{{.State.StartedAt}}", container,
                           check=False, timeout=30)
        stamp = done.stdout.strip()
        if done.returncode != 0 or not stamp:
            return 0.0
        # RFC 3339 with nanoseconds and "Z": whole seconds are enough here.
        started = datetime.datetime.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")
        now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
        return (now - started).total_seconds()

    def tasks(self):
        """Every task of the stack: name, state and error (a diagnostic)."""
        done = self.docker("stack", "ps", NAME, "--no-trunc", "--format",
                           "{{.Name}}\t{{.CurrentState}}\t{{.Error}}", check=False, timeout=30)
        return done.stdout + done.stderr

    def logs(self, service, lines=30):
        done = self.docker("service", "logs", "--raw", "--tail", str(lines),
                           f"{NAME}_{service}", check=False, timeout=30)
        return done.stdout + done.stderr


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
