"""The open-files limit check (engine/system/rlimits.py)."""
import resource
import subprocess
import sys

from engine.system.rlimits import SPARE, too_low


def test_too_low_names_the_limit_and_the_cap():
    assert too_low(1024, 0) is None                     # no cap configured
    assert too_low(20000, 20000 - SPARE) is None
    assert too_low(resource.RLIM_INFINITY, 10**9) is None
    reason = too_low(1024, 5000)
    assert "(1024)" in reason and "MaximumConnections (5000)" in reason


def test_raise_moves_the_soft_limit_to_the_hard_one():
    # in a child process: the test runner's own limit stays as it is
    code = ("import resource; from engine.system.rlimits import raise_open_files_limit as r;"
            "s, h = resource.getrlimit(resource.RLIMIT_NOFILE);"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (100, h));"
            "print(r(), resource.getrlimit(resource.RLIMIT_NOFILE), h)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    hard = int(out.split()[-1])
    assert out.startswith(f"(100, {hard}) ({hard}, {hard}) {hard}")
