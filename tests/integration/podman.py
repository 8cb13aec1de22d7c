"""Podman for the container tests.

Every call goes through scripts/podman.sh (runc, vfs, ulimits that fit an
engine-less sandbox). The image is built from the repo's Dockerfile on the
local debootstrap base (scripts/container_base.sh, cached under
~/.cache/tracker), or on $TRACKER_TEST_BASE_IMAGE when that is set, e.g. an
official python image on a machine that reaches a registry.

Containers use host networking: each collector gets its own free loopback
port, exactly as the other integration tests do.
"""
import os
import shutil
import subprocess
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PODMAN = os.path.join(REPO, "scripts", "podman.sh")
BASE_SCRIPT = os.path.join(REPO, "scripts", "container_base.sh")
IMAGE = "localhost/tracker:test"
IMAGE_UID = 10001            # the image's "tracker" user (Dockerfile)
BUILD_TIMEOUT = 1800


def missing_tools():
    """What this machine lacks to run the container tests (empty: nothing)."""
    needed = ["podman", "runc"]
    if not os.environ.get("TRACKER_TEST_BASE_IMAGE"):
        needed.append("debootstrap")
    return [tool for tool in needed
            if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}")]


def podman(*args, check=True, timeout=120):
    done = subprocess.run([PODMAN, *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {done.returncode}:\n"
                             f"{done.stdout}\n{done.stderr}")
    return done


def base_image():
    chosen = os.environ.get("TRACKER_TEST_BASE_IMAGE")
    if chosen:
        return chosen
    done = subprocess.run([BASE_SCRIPT], capture_output=True, text=True,
                          timeout=BUILD_TIMEOUT, check=True)
    return done.stdout.strip().splitlines()[-1]


def ca_bundle():
    """The CA bundle this machine's pip trusts, for builds behind a TLS proxy."""
    for var in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        path = os.environ.get(var)
        if path and os.path.isfile(path):
            return path
    return None


def build_image(tag=IMAGE):
    # --format docker: the OCI format has no HEALTHCHECK, podman would drop it.
    args = ["build", "--format", "docker", "--network", "host",
            "--build-arg", f"BASE_IMAGE={base_image()}", "-t", tag]
    bundle = ca_bundle()
    if bundle:
        args += ["--secret", f"id=build-ca,src={bundle}"]
    prune_old_layers()
    podman(*args, REPO, timeout=BUILD_TIMEOUT)
    prune_old_layers()
    return tag


def prune_old_layers():
    """Every changed build leaves untagged images behind, full copies under
    vfs (0.4-0.8 GB each). Keep only the last hour's (the cache the next build
    of the same tree uses): a day's worth filled a CI machine's disk."""
    podman("image", "prune", "-f", "--filter", "until=1h", check=False,
           timeout=BUILD_TIMEOUT)


def data_dir(path):
    """A host directory the image's non-root user can write (a bind mount
    keeps the host's owner)."""
    os.makedirs(path, exist_ok=True)
    os.chown(path, IMAGE_UID, IMAGE_UID)
    return path


class Container:
    def __init__(self, image, args=(), mounts=(), name="tracker", options=()):
        self.name = f"{name}-{uuid.uuid4().hex[:8]}"
        self.image = image
        self.args = list(args)
        self.mounts = list(mounts)      # "host:container[:ro]"
        self.options = list(options)    # more `podman run` options
        self.started = False

    def start(self):
        self.started = True         # a failed run can still leave a container to remove
        volumes = [flag for mount in self.mounts for flag in ("-v", mount)]
        # No systemd here, so no health-check timer: the test runs the image's
        # HEALTHCHECK itself with `podman healthcheck run`.
        podman("run", "-d", "--name", self.name, "--network", "host",
               "--health-interval", "disable", *volumes, *self.options, self.image,
               *self.args)
        return self

    def running(self):
        done = podman("inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return done.stdout.strip() == "true"

    def logs(self):
        done = podman("logs", self.name, check=False)
        return done.stdout + done.stderr

    def exec(self, *command):
        return podman("exec", self.name, *command).stdout

    def healthcheck(self):
        """The image's HEALTHCHECK, run once: podman's exit code (0 healthy)."""
        return podman("healthcheck", "run", self.name, check=False).returncode

    def stop(self, grace=30):
        """`podman stop` (the image's STOPSIGNAL, SIGKILL after ``grace`` s);
        returns the container's exit code."""
        podman("stop", "-t", str(grace), self.name, timeout=grace + 30)
        done = podman("inspect", "--format", "{{.State.ExitCode}}", self.name)
        return int(done.stdout.strip())

    def remove(self):
        if self.started:
            podman("rm", "-f", self.name, check=False)
