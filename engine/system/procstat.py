"""CPU time and resident memory of one process, read from ``/proc`` (Linux).

The supervisor reads these for every child it has forked (and itself) to
publish CPU and memory per role (engine/metrics.py ``RoleUsage``);
prometheus_client's own process collector sees only the process it runs in.
"""
import os

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
# Fields of /proc/<pid>/stat after the ")" closing the command name
# (man 5 proc numbers them from 1 with pid; state, field 3, is index 0 here).
UTIME, STIME = 14 - 3, 15 - 3


def cpu_seconds(pid, proc="/proc"):
    """User + system CPU seconds the process (all its threads) has used, not
    counting its children; None when it is gone."""
    try:
        with open(f"{proc}/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    # The command name may hold spaces and ")": split after its last ")".
    fields = data[data.rindex(b")") + 2:].split()
    return (int(fields[UTIME]) + int(fields[STIME])) / CLOCK_TICKS


def resident_bytes(pid, proc="/proc"):
    """Resident set size in bytes (pages shared with other processes count
    in each of them); None when the process is gone."""
    try:
        with open(f"{proc}/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return None


def rusage_cpu_seconds(rusage):
    """User + system CPU seconds of a reaped child (``os.wait4``'s rusage)."""
    return rusage.ru_utime + rusage.ru_stime
