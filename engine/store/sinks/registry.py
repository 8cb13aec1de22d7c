"""Finding the sink class for a Notify entry's ``Service``.

Sinks are plug-ins: any installed distribution may register a class under
the ``tracker.sinks`` entry-point group. The built-in ones are also listed
here so a source checkout works before ``pip install``.
"""
import importlib
from importlib.metadata import entry_points

BUILT_IN = {"sqlite": "engine.store.sinks.sqlite:SQLiteSink",
            "nats": "engine.store.sinks.nats:NatsSink",
            "cassandra": "engine.store.sinks.cassandra:CassandraSink",
            "kafka": "engine.store.sinks.kafka:KafkaSink"}


class SinkEntryError(ValueError):
    """A Notify entry no sink can be built from: an unknown Service, or a key
    its sink refuses (the message names the entry and the key)."""


class UnknownSink(SinkEntryError):
    pass


def _load(target):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def installed():
    """{service: where its sink class is} for every installed sink, plug-ins
    included (an entry point wins over a built-in of the same name). One scan
    of the installed distributions (~10 ms): pass the result on."""
    found = dict(BUILT_IN)
    for ep in entry_points(group="tracker.sinks"):
        found[ep.name] = ep
    return found


def installed_services(found=None):
    """The Notify services a sink is installed for, sorted."""
    return sorted(installed() if found is None else found)


def sink_class(service, found=None):
    found = installed() if found is None else found
    target = found.get(service)
    if target is None:
        raise UnknownSink(f"no sink is installed for Service {service!r} "
                          f"(installed: {', '.join(sorted(found))})")
    return _load(target) if isinstance(target, str) else target.load()


def entry_keys(service, found=None):
    """The Notify entry keys the sink of ``service`` reads, or None when its
    class does not say (a plug-in may not) or cannot be loaded."""
    try:
        return getattr(sink_class(service, found), "entry_keys", None)
    except Exception:      # a broken plug-in is reported when its sink is built
        return None


def build_sinks(config):
    """One sink per Notify entry. Building one does no I/O (connections are
    made by ``start``), so `tracker check-config` builds them too."""
    sinks = []
    where = getattr(config, "notify_where", None) or []
    found = installed()
    for i, entry in enumerate(config.notify):
        cls = sink_class(entry["Service"], found)
        try:
            sinks.append(cls(entry, config))
        except (ValueError, TypeError) as exc:
            name = where[i] if i < len(where) else f"Notify[{i}]"
            raise SinkEntryError(f"{name} ({entry['Service']}): {exc}") from None
    return sinks


class CriticalSinkDown(RuntimeError):
    """A ``Critical`` store cannot be reached at start: the process must not boot."""


async def start_sinks(sinks, waiting="events"):
    """Start every sink (in a worker, after the fork). A critical one that
    fails stops the boot; the others are returned, to be started again
    before their first write while ``waiting`` wait for them."""
    from engine.logs import log
    from engine.store.sinks.base import SinkUnavailable
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
