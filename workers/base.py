"""What every worker process shares: boot, liveness, and the run skeleton.

- ``BootError``: the worker cannot start (port, store, config); it exits with
  ``EXIT_BOOT`` and the supervisor stops instead of respawning it forever.
- ``die_with_parent``: Linux sends the worker SIGTERM when the supervisor
  dies (each worker's tick also checks its parent, for other systems).
- ``set_title``: ``tracker: http-0`` in ``ps`` and ``top``, as gunicorn's
  workers show their role.
- ``report_ready``: the one byte on the ready pipe the supervisor waits for.
- ``heartbeat``: a task touching the worker's board slot (engine/board.py)
  every tick. It runs on the worker's event loop, so a loop that is stuck
  stops beating, and the supervisor replaces the worker after
  ``WorkerTimeoutSeconds``.
- ``run_async``: the skeleton of an asyncio worker's entry point (it also
  sets the garbage collector up for the role: engine/system/gc_tuning.py).

Test hook (off unless the environment says so): with ``TRACKER_TEST_HOOKS``
containing ``block-loop``, SIGUSR2 blocks the worker's event loop for good,
which is how tests/integration/test_store_stage.py proves a stuck worker is
replaced.
"""
import asyncio
import ctypes
import os
import signal
import time

from engine.logs import configure, log
from engine.system import gc_tuning
from workers import EXIT_BOOT, EXIT_OK

PR_SET_PDEATHSIG = 1
HEARTBEAT_EVERY = 0.5
TEST_HOOKS = "TRACKER_TEST_HOOKS"


class BootError(Exception):
    """The worker cannot start; the supervisor must not respawn it."""


def die_with_parent():
    """Ask Linux to SIGTERM this worker when the supervisor dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # the worker's tick still notices a new parent


def set_title(role):
    """``tracker: <role>`` as the process title (``ps``, ``top``)."""
    try:
        from setproctitle import setproctitle
    except ImportError:       # titles are a convenience
        return
    setproctitle(f"tracker: {role}")


def report_ready(ready_fd):
    os.write(ready_fd, b"R")


async def heartbeat(slot):
    while True:
        slot.beat()
        await asyncio.sleep(HEARTBEAT_EVERY)


def install_test_hooks(loop):
    if "block-loop" in os.environ.get(TEST_HOOKS, ""):
        loop.add_signal_handler(signal.SIGUSR2, lambda: time.sleep(1 << 30))


def prepare(config, role):
    """The process set-up every worker does first, after the fork."""
    configure(config.effective_log_level, role)
    die_with_parent()
    set_title(role)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)     # reloads are the supervisor's
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)


def run_async(config, role, serve, slot=None, kind=None, index=0,
              boot_message="worker cannot boot"):
    """Run ``serve()`` (a coroutine function) on a fresh uvloop; the exit code.

    ``slot`` (the worker's board slot) is claimed as ``kind``/``index`` and
    beaten while the loop runs; a ``BootError`` is logged as ``boot_message``."""
    import uvloop
    prepare(config, role)
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    gc_tuning.tune(role, loop)
    install_test_hooks(loop)
    beat = None
    if slot is not None:
        slot.claim(kind, index)
        beat = loop.create_task(heartbeat(slot))
    try:
        loop.run_until_complete(serve())
    except BootError as exc:
        log.error(boot_message, reason=str(exc), index=index)
        return EXIT_BOOT
    finally:
        if beat is not None:
            beat.cancel()
            loop.run_until_complete(asyncio.gather(beat, return_exceptions=True))
        loop.close()
    return EXIT_OK
