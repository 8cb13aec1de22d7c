#!/bin/sh
# Container entry point: `tracker "$@"` with the open-files limit raised.
#
# Every connection is a file descriptor. Engines may start a container with a
# soft limit of 1024 under a much higher hard limit; the Go collector's
# runtime raised its soft limit to the hard one by itself, Python does not, so
# do it here. Failing to raise it is not fatal.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# exec: the supervisor becomes PID 1 and receives the engine's SIGTERM.
exec tracker "$@"
