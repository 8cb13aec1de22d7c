"""How many CPUs this process may really use (the default worker count).

``os.cpu_count()`` is the host's count. Inside a container with a CPU limit
(Docker ``--cpus``, Swarm ``resources.limits.cpus``, Kubernetes limits) the
cgroup's quota is what the workers share, and forking one worker per host CPU
would only add context switches. So: the CPUs in our affinity mask, capped by
the cgroup quota rounded up (cgroup v2 ``cpu.max``, or v1
``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``), at least 1.
"""
import math
import os

CGROUP_ROOT = "/sys/fs/cgroup"


def _read(path):
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return None


def _own_cgroup_dirs(root, proc_cgroup="/proc/self/cgroup"):
    """Directories that may hold our CPU limit: our own cgroup's, then the root's."""
    dirs = []
    text = _read(proc_cgroup) or ""
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        path = path.lstrip("/")
        if controllers == "":                       # v2 unified hierarchy
            dirs.append(os.path.join(root, path))
        elif "cpu" in controllers.split(","):        # v1 cpu controller
            dirs.append(os.path.join(root, controllers, path))
            dirs.append(os.path.join(root, "cpu", path))
    dirs.append(root)
    dirs.append(os.path.join(root, "cpu"))
    return dirs


def cgroup_cpu_limit(root=CGROUP_ROOT, proc_cgroup="/proc/self/cgroup"):
    """The cgroup CPU quota in CPUs (a float), or None when there is none."""
    for d in _own_cgroup_dirs(root, proc_cgroup):
        v2 = _read(os.path.join(d, "cpu.max"))
        if v2 is not None:
            quota, _, period = v2.partition(" ")
            if quota != "max" and period:
                return int(quota) / int(period)
            return None
        quota = _read(os.path.join(d, "cpu.cfs_quota_us"))
        period = _read(os.path.join(d, "cpu.cfs_period_us"))
        if quota is not None and period is not None:
            return int(quota) / int(period) if int(quota) > 0 else None
    return None


def usable_cpus(root=CGROUP_ROOT, proc_cgroup="/proc/self/cgroup"):
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    limit = cgroup_cpu_limit(root, proc_cgroup)
    if limit is not None:
        count = min(count, math.ceil(limit))
    return max(1, count)
