"""Single-thread executors whose threads carry a name the OS can see.

Python names its threads for itself only; ``top -H``, ``ps -L`` and
``/proc/PID/task/TID/comm`` show every thread of a worker as "tracker".
Naming the native thread (15 bytes at most, Linux ``prctl(PR_SET_NAME)``)
lets an operator — and ``loadtest/bench_http.py`` — see how a worker's CPU
splits between the event loop, the spool's fsyncs and each store.
"""
import ctypes
import ctypes.util
from concurrent.futures import ThreadPoolExecutor

PR_SET_NAME = 15

try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    _prctl = _libc.prctl
except (OSError, AttributeError):   # not Linux: names stay Python-only
    _prctl = None


def set_native_name(name):
    if _prctl is not None:
        _prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def named_executor(name):
    """A one-thread executor whose thread is named ``name`` for the OS too."""
    return ThreadPoolExecutor(1, thread_name_prefix=name,
                              initializer=set_native_name, initargs=(name,))
