"""``Notify`` and ``Consume`` entries: which are kept, which are skipped, and
which of their keys are read.

An entry whose ``Service`` nothing here implements is skipped and reported in
``Config.skipped`` (the Go collector logged ``... not implemented`` and went
on), unless it says ``"Critical": true``: then the config is refused. Known
``Notify`` services are those with an installed sink (engine/sinks/registry.py,
plug-ins included); the only consumer is NATS.

Keys an entry of a Go collector config may hold that its service here does
not read (``Note``, ``Retry``, a Cassandra ``Filter`` of queries, ...) go to
``Config.ignored``; any other key a sink does not read is a warning (a typo,
most likely). A plug-in sink that declares no ``entry_keys`` has its keys
left alone: they are its business.
"""
import difflib

from engine.nats.options import CONSUME_KEYS, FILTER_KEYS
from engine.store.sinks.registry import entry_keys, installed

# Keys of the Go collector's Notify/Consume entries, and of their Filter items.
GO_ENTRY_KEYS = frozenset({
    "Service", "Hosts", "Context", "Timeout", "Connections", "CACert", "Cert", "Key",
    "Secure", "Critical", "Filter", "Format", "MessageLimit", "BytesLimit", "ByteLimit",
    "Retry", "Note", "Username", "Password",
})
GO_FILTER_KEYS = frozenset({"Alias", "Id", "Type", "Queries"})
CONSUMERS = ("nats",)


def did_you_mean(name, known):
    """``" (did you mean 'x'?)"`` for the closest of ``known``, or ``""``."""
    close = difflib.get_close_matches(str(name), sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def drop_unknown_services(cfg, problems):
    """Drop the ``cfg.notify`` / ``cfg.consume`` entries of unknown services
    (reported in ``cfg.skipped``, or in ``problems`` when Critical). Each kept
    entry's place in the file goes to ``cfg.notify_where`` / ``cfg.consume_where``.
    Returns the installed sinks (engine/sinks/registry.py ``installed``)."""
    sinks = installed()
    for section, known in (("Notify", sorted(sinks)), ("Consume", CONSUMERS)):
        entries = getattr(cfg, section.lower())
        kept, where_of = [], []
        for i, entry in enumerate(entries):
            where = f"{section}[{i}]"
            if isinstance(entry, dict) and entry.get("Service") not in known:
                _unknown_service(cfg, where, entry, section, known, problems)
                continue
            kept.append(entry)
            where_of.append(where)
        if section == "Notify" and entries and not kept:
            problems.append("Notify: every entry was skipped; events would be stored nowhere")
        setattr(cfg, section.lower(), kept)
        setattr(cfg, section.lower() + "_where", where_of)
    return sinks


def note_unread_keys(cfg, sinks):
    """``cfg.ignored`` / ``cfg.warnings`` for the keys of kept entries that
    their service does not read (``sinks``: what ``drop_unknown_services`` returned)."""
    for section in ("Notify", "Consume"):
        attr = section.lower()
        for where, entry in zip(getattr(cfg, attr + "_where"), getattr(cfg, attr)):
            if isinstance(entry, dict):
                _note_unread_keys(cfg, where, entry, section, sinks)


def _unknown_service(cfg, where, entry, section, known, problems):
    service = entry.get("Service")
    what = f"Service {service!r}" if "Service" in entry else "no Service"
    kind = "no sink is installed for" if section == "Notify" else "no consumer exists for"
    hint = did_you_mean(service, known) if service is not None else ""
    text = f"{where}: {kind} {what}{hint}; known: {', '.join(known)}"
    if entry.get("Critical") is True:
        problems.append(text + "; the entry is Critical, so the collector cannot start "
                               "without it")
    else:
        cfg.skipped.append(text + "; entry skipped")


def _note_unread_keys(cfg, where, entry, section, sinks):
    service = entry["Service"]
    reads = CONSUME_KEYS if section == "Consume" else entry_keys(service, sinks)
    if reads is None:
        return
    _sort_keys(cfg, where, entry.keys(), reads, GO_ENTRY_KEYS, f"{service} {section} entries")
    if "Filter" in reads and isinstance(entry.get("Filter"), list):
        keys = {k for item in entry["Filter"] if isinstance(item, dict) for k in item}
        _sort_keys(cfg, f"{where}.Filter[]", keys, FILTER_KEYS, GO_FILTER_KEYS,
                   f"{service} {section} Filter items")


def _sort_keys(cfg, where, keys, reads, go_keys, what):
    for key in sorted(k for k in keys if k not in reads):
        if key in go_keys:
            cfg.ignored.append(f"{where}.{key}")
        else:
            cfg.warnings.append(f"{where}.{key}: not a key of {what}"
                                f"{did_you_mean(key, reads)}, ignored")
