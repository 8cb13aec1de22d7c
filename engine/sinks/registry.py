"""Finding the sink class for a Notify entry's ``Service``.

Sinks are plug-ins: any installed distribution may register a class under
the ``tracker.sinks`` entry-point group. The built-in ones are also listed
here so a source checkout works before ``pip install``.
"""
import importlib
from importlib.metadata import entry_points

BUILT_IN = {"sqlite": "engine.sinks.sqlite:SQLiteSink",
            "nats": "engine.sinks.nats:NatsSink",
            "cassandra": "engine.sinks.cassandra:CassandraSink"}


class SinkEntryError(ValueError):
    """A Notify entry no sink can be built from: an unknown Service, or a key
    its sink refuses (the message names the entry and the key)."""


class UnknownSink(SinkEntryError):
    pass


def _load(target):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def sink_class(service):
    for ep in entry_points(group="tracker.sinks"):
        if ep.name == service:
            return ep.load()
    if service in BUILT_IN:
        return _load(BUILT_IN[service])
    names = sorted({ep.name for ep in entry_points(group="tracker.sinks")} | set(BUILT_IN))
    raise UnknownSink(f"no sink is installed for Service {service!r} "
                      f"(installed: {', '.join(names)})")


def build_sinks(config):
    """One sink per Notify entry. Building one does no I/O (connections are
    made by ``start``), so `tracker check-config` builds them too."""
    sinks = []
    for i, entry in enumerate(config.notify):
        cls = sink_class(entry["Service"])
        try:
            sinks.append(cls(entry, config))
        except (ValueError, TypeError) as exc:
            raise SinkEntryError(f"Notify[{i}] ({entry['Service']}): {exc}") from None
    return sinks


class CriticalSinkDown(RuntimeError):
    """A ``Critical`` store cannot be reached at start: the process must not boot."""


async def start_sinks(sinks, waiting="events"):
    """Start every sink (in a worker, after the fork). A critical one that
    fails stops the boot; the others are returned, to be started again
    before their first write while ``waiting`` wait for them."""
    from ..logs import log
    from .base import SinkUnavailable
    failed = set()
    for sink in sinks:
        try:
            await sink.start()
        except (SinkUnavailable, OSError) as exc:
            if sink.critical:
                raise CriticalSinkDown(
                    f"critical sink {sink.service} unavailable: {exc}") from None
            log.error(f"sink unavailable at start; {waiting} wait for it",
                      sink=sink.service, error=str(exc))
            failed.add(sink)
    return failed
