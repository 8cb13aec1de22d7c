"""Structured logs: one JSON object per line on stderr.

Never called per request: logging sits on start-up, errors and state changes.
"""
import os
import sys
import time

import orjson

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


class Logger:
    def __init__(self, level="info", role="supervisor", stream=None):
        self.threshold = LEVELS.get(level, 20)
        self.role = role
        self.stream = stream or sys.stderr

    def set_level(self, level):
        self.threshold = LEVELS.get(level, 20)

    def log(self, level, msg, **fields):
        if LEVELS[level] < self.threshold:
            return
        record = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z",
                  "level": level, "pid": os.getpid(), "role": self.role, "msg": msg}
        record.update(fields)
        try:
            line = orjson.dumps(record, default=str) + b"\n"
            self.stream.buffer.write(line) if hasattr(self.stream, "buffer") else \
                self.stream.write(line.decode())
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed stderr must not take the process down

    def debug(self, msg, **f):
        self.log("debug", msg, **f)

    def info(self, msg, **f):
        self.log("info", msg, **f)

    def warning(self, msg, **f):
        self.log("warning", msg, **f)

    def error(self, msg, **f):
        self.log("error", msg, **f)


log = Logger()


def configure(level, role):
    log.set_level(level)
    log.role = role
    return log
