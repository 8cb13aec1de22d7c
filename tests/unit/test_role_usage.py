"""CPU and memory per role: engine/system/procstat.py on real processes, and
the supervisor's account (engine/metrics.py RoleUsage) through a child's life."""
import os
import resource
import signal
import time

import pytest

from engine.metrics import RoleUsage
from engine.system import procstat


def burn(seconds):
    """Spend about ``seconds`` of CPU in this process."""
    start = time.process_time()
    while time.process_time() - start < seconds:
        sum(range(1000))


def test_cpu_seconds_of_this_process_matches_its_rusage():
    burn(0.2)
    own = resource.getrusage(resource.RUSAGE_SELF)
    read = procstat.cpu_seconds(os.getpid())
    # /proc counts in clock ticks (10 ms); rusage in microseconds
    assert read == pytest.approx(own.ru_utime + own.ru_stime, abs=0.05)
    assert read >= 0.2
    assert procstat.resident_bytes(os.getpid()) > 1 << 20


def test_a_command_name_with_spaces_and_parentheses(tmp_path):
    (tmp_path / "77").mkdir()
    ticks = procstat.CLOCK_TICKS
    rest = " ".join(["S", "1", "77", "77", "0", "-1", "4194560", "10", "0", "0", "0",
                     str(3 * ticks), str(ticks // 2)] + ["0"] * 39)
    (tmp_path / "77" / "stat").write_text(f"77 (tracker: ) x (1)) {rest}\n")
    (tmp_path / "77" / "statm").write_text("5000 1200 300 1 0 900 0\n")
    assert procstat.cpu_seconds(77, proc=str(tmp_path)) == 3.5
    assert procstat.resident_bytes(77, proc=str(tmp_path)) == 1200 * procstat.PAGE_SIZE


def test_a_gone_process_reads_as_none(tmp_path):
    assert procstat.cpu_seconds(12345, proc=str(tmp_path)) is None
    assert procstat.resident_bytes(12345, proc=str(tmp_path)) is None


def fork_burner(seconds):
    """A child that burns ``seconds`` of CPU, then waits for SIGTERM."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
            burn(seconds)
            os.write(ready_w, b"R")
            while True:
                time.sleep(1)
        finally:
            os._exit(1)
    os.close(ready_w)
    assert os.read(ready_r, 1) == b"R"
    os.close(ready_r)
    return pid


def test_a_reaped_child_keeps_its_cpu_in_its_role():
    usage = RoleUsage()
    pid = fork_burner(0.3)
    usage.started(pid, "http")
    cpu, rss = usage.totals()
    assert cpu["http"] >= 0.29 and rss["http"] > 1 << 20
    os.kill(pid, signal.SIGTERM)
    _, _, rusage = os.wait4(pid, 0)
    usage.reaped(pid, procstat.rusage_cpu_seconds(rusage))
    after, rss = usage.totals()
    assert after["http"] >= cpu["http"]            # never less than the last reading
    assert after["http"] == pytest.approx(procstat.rusage_cpu_seconds(rusage), abs=0.011)
    assert rss["http"] == 0 and not usage.live

    again = fork_burner(0.1)                       # the respawned worker adds to it
    usage.started(again, "http")
    assert usage.totals()[0]["http"] >= after["http"] + 0.09
    os.kill(again, signal.SIGTERM)
    os.waitpid(again, 0)


class FakeProc:
    """CPU readings by pid, changed by the test (a process /proc no longer shows: None)."""

    def __init__(self):
        self.cpu = {}

    def read_cpu(self, pid):
        return self.cpu.get(pid)

    def read_rss(self, pid):
        return 4096 if pid in self.cpu else None


def test_role_totals_never_decrease():
    proc = FakeProc()
    usage = RoleUsage(proc.read_cpu, proc.read_rss)
    usage.started(1, "supervisor")
    usage.started(10, "http")
    usage.started(11, "http")
    proc.cpu.update({1: 0.5, 10: 2.0, 11: 3.0})
    assert usage.totals() == ({"supervisor": 0.5, "http": 5.0}, {"supervisor": 4096, "http": 8192})
    proc.cpu[10] = None                            # exited, not reaped yet: keep what was seen
    assert usage.totals()[0]["http"] == 5.0
    usage.reaped(10, 1.5)                          # rusage below the last reading: the reading wins
    assert usage.totals()[0]["http"] == 5.0
    usage.reaped(11, 3.25)                         # it ran on after the last reading
    usage.started(12, "http")
    proc.cpu[12] = 0.25
    assert usage.totals() == ({"supervisor": 0.5, "http": 5.5}, {"supervisor": 4096, "http": 4096})
    usage.reaped(999, 7.0)                         # not one of ours: ignored
    assert usage.totals()[0]["http"] == 5.5
