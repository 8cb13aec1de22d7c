"""The ``tracker`` command line."""
import argparse
import os
import sys

from engine import __version__
from engine.errors import ConfigError

DEFAULT_CONFIG = os.environ.get("TRACKER_CONFIG", "config.json")


def _add_report_command(sub):
    from engine.reports import KINDS
    report = sub.add_parser("report", help="growth and audience reports from the embedded store "
                            "(or a copy of Cassandra's events)")
    report.add_argument("kind", choices=KINDS)
    report.add_argument("--config", default=DEFAULT_CONFIG)
    report.add_argument("--since", help="first UTC day (YYYY-MM-DD) or time included")
    report.add_argument("--until", help="last UTC day included, or a time excluded")
    report.add_argument("--steps", help="funnels: the enames of the steps, in order, "
                        "comma-separated")
    report.add_argument("--outcome", help="experiments: only this outcome converts")
    report.add_argument("--control", help="experiments: the control split "
                        "(default: the first in name order)")
    output = report.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true")
    output.add_argument("--csv", action="store_true")


def build_parser():
    parser = argparse.ArgumentParser(prog="tracker", description=(
        "Self-hosted visitor and growth-event collector."))
    parser.add_argument("--version", action="version", version=f"tracker {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the collector (supervisor + workers)")
    serve.add_argument("--config", default=DEFAULT_CONFIG)
    serve.add_argument("--workers", type=int, help="worker processes (overrides Workers)")
    serve.add_argument("--listen", help="HOST:PORT for plain HTTP (overrides ProxyPort)")
    serve.add_argument("--listen-tls", help="HOST:PORT for TLS (overrides ProxyPortTLS)")

    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("--config", default=DEFAULT_CONFIG)

    stats = sub.add_parser("stats", help="summarise what the embedded store holds")
    stats.add_argument("--config", default=DEFAULT_CONFIG)
    _add_report_command(sub)

    schema = sub.add_parser("schema", help="store schemas")
    schema_sub = schema.add_subparsers(dest="action", required=True)
    apply = schema_sub.add_parser("apply", help="create the schema in every Notify store")
    apply.add_argument("--config", default=DEFAULT_CONFIG)

    repeat = sub.add_parser("repeat", help="copy events between a NATS JetStream subject and "
                                           "a Kafka topic (docs/kafka.md)")
    repeat.add_argument("--from", dest="source", required=True,
                        metavar="nats:SUBJECT|kafka:TOPIC")
    repeat.add_argument("--to", dest="target", required=True, metavar="kafka:TOPIC|nats:SUBJECT")
    repeat.add_argument("--config", help="take each side's Hosts, TLS and credentials from "
                                         "this config's nats / kafka entry")
    repeat.add_argument("--nats-hosts", help="comma-separated host:port (overrides the config)")
    repeat.add_argument("--kafka-hosts", help="comma-separated host:port (overrides the config)")
    repeat.add_argument("--batch", type=int, default=1000,
                        help="messages in flight at most (one group)")
    repeat.add_argument("--durable", default="tracker-repeat",
                        help="JetStream durable consumer (from nats)")
    repeat.add_argument("--group", default="tracker-repeat",
                        help="Kafka consumer group (from kafka)")
    repeat.add_argument("--stream", default="", help="JetStream stream: the source's, or the "
                        "target's, created for the subject when missing")
    repeat.add_argument("--ack-wait", type=float, default=30.0,
                        help="seconds JetStream waits for an ack before handing a message out "
                             "again (from nats)")
    repeat.add_argument("--partitions", type=int, default=0,
                        help="create a missing target topic with this many partitions")
    repeat.add_argument("--stop-when-idle", type=float, default=0.0, metavar="SECONDS",
                        help="exit once nothing arrived for this long (0: run until signalled)")
    _add_privacy_commands(sub)
    return parser


def _add_privacy_commands(sub):
    erase = sub.add_parser("erase", help="delete visitors' rows from every store "
                           "(and publish an erase message on NATS)")
    erase.add_argument("--config", required=True)
    erase.add_argument("--vid", action="append", default=[], help="a visitor id (repeatable)")
    erase.add_argument("--uid", action="append", default=[],
                       help="a user id: every visitor that logged in as it (repeatable)")
    prune = sub.add_parser("prune", help="delete what is older than RetentionDays now")
    prune.add_argument("--config", required=True)
    prune.add_argument("--days", type=int, default=None,
                       help="override RetentionDays for this run")


def overrides_from(args):
    found = {}
    if getattr(args, "workers", None) is not None:
        found["workers"] = args.workers
    if getattr(args, "listen", None):
        found["proxy_port"] = args.listen
    if getattr(args, "listen_tls", None):
        found["proxy_port_tls"] = args.listen_tls
    return found


def cmd_serve(args):
    from engine.supervisor import serve
    return serve(args.config, overrides_from(args))


def cmd_check_config(args):
    from engine.config import load_config
    from engine.store.sinks.registry import SinkEntryError, build_sinks
    cfg = load_config(args.config)
    for warning in cfg.warnings + cfg.skipped:
        print("warning:", warning, file=sys.stderr)
    if cfg.ignored:
        print("info: keys of the Go collector not used here, ignored:",
              ", ".join(cfg.ignored), file=sys.stderr)
    try:
        build_sinks(cfg)       # each store checks its own keys; nothing is connected
    except SinkEntryError as exc:
        print(f"{args.config}: {exc}", file=sys.stderr)
        return 2
    stores = ", ".join(e["Service"] for e in cfg.notify)
    consumers = ", ".join(e["Service"] for e in cfg.consume) or "none"
    print(f"{args.config}: OK (TLS {cfg.tls}, listen {cfg.listen[0]}:{cfg.listen[1]}, "
          f"workers {cfg.workers}, stores: {stores}, consumers: {consumers})")
    return 0


def _sqlite_path(cfg):
    for entry in cfg.notify:
        if entry["Service"] == "sqlite":
            return entry["Path"]
    return None


def cmd_stats(args):
    from engine.config import load_config
    from engine.store import stats
    cfg = load_config(args.config)
    path = _sqlite_path(cfg)
    if path is None:
        print("no sqlite store in Notify; `tracker stats` reads the embedded store",
              file=sys.stderr)
        return 2
    try:
        print(stats.format_text(stats.collect(path)))
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


def cmd_report(args):
    from engine.config import load_config
    from engine.reports import ReportError, check, open_store, render, run
    from engine.reports.timerange import RangeError, parse_range
    from engine.store.sinks.base import SinkUnavailable
    cfg = load_config(args.config)
    steps = [s.strip() for s in (args.steps or "").split(",") if s.strip()]
    try:
        start, end = parse_range(args.since, args.until)
        check(args.kind, steps)                 # before a Cassandra store is copied
        with _report_store(cfg) as path:
            conn = open_store(path)
            try:
                report = run(args.kind, conn, start, end, steps=steps, outcome=args.outcome,
                             control=args.control)
            finally:
                conn.close()
    except (ReportError, RangeError) as exc:
        print(f"tracker report: {exc}", file=sys.stderr)
        return 2
    except SinkUnavailable as exc:          # the Cassandra store cannot be read now
        print(f"tracker report: {exc}", file=sys.stderr)
        return 1
    for note in report.notes:
        print("warning:", note, file=sys.stderr)
    print(render.as_json(report) if args.json else render.as_csv(report) if args.csv
          else render.as_text(report))
    return 0


def _report_store(cfg):
    """A context giving the path of the SQLite store the reports read: the
    embedded store, or else a temporary copy of the Cassandra events."""
    import contextlib
    import tempfile
    path = _sqlite_path(cfg)
    if path is not None:
        return contextlib.nullcontext(path)
    entry = next((e for e in cfg.notify if e["Service"] == "cassandra"), None)
    if entry is None:
        from engine.reports import ReportError
        raise ReportError("no sqlite or cassandra store in Notify; `tracker report` reads "
                          "one of them")

    @contextlib.contextmanager
    def copied():
        from engine.reports.cassandra_copy import copy_events
        with tempfile.TemporaryDirectory(prefix="tracker-report-") as tmp:
            target = os.path.join(tmp, "copy.db")
            n, seconds = copy_events(entry, cfg, target)
            print(f"tracker report: copied {n} events from cassandra "
                  f"{entry.get('Context') or 'tracker'} in {seconds:.1f} s", file=sys.stderr)
            yield target
    return copied()


def cmd_schema(args):
    import asyncio
    from engine.config import load_config
    from engine.store.sinks.base import SinkUnavailable
    from engine.store.sinks.registry import build_sinks
    cfg = load_config(args.config)
    for sink in build_sinks(cfg):
        apply = getattr(sink, "apply_schema", None)
        if apply is None:
            print(f"{sink.service}: no schema to apply")
            continue
        try:
            lines = asyncio.run(apply())
        except SinkUnavailable as exc:
            print(f"{sink.service}: {exc}", file=sys.stderr)
            return 1
        for line in lines:
            print(f"{sink.service}: {line}")
    return 0


def cmd_erase(args):
    import asyncio
    from engine.config import load_config
    from engine.store.erase import EraseRequestError, erase_everywhere, format_report
    cfg = load_config(args.config)
    try:
        report = asyncio.run(erase_everywhere(cfg, args.vid, args.uid))
    except EraseRequestError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(format_report(report))
    return 1 if any("error" in line for line in report) else 0


def cmd_prune(args):
    from engine.config import load_config
    from engine.store import retention
    cfg = load_config(args.config)
    days = args.days if args.days is not None else cfg.retention_days
    if not days:
        print("RetentionDays is 0 (keep for ever): nothing to prune; pass --days N to "
              "prune anyway", file=sys.stderr)
        return 2
    code = 0
    for entry in cfg.notify:
        if entry["Service"] == "sqlite":
            try:
                deleted = retention.prune_sqlite(entry["Path"], days)
            except (RuntimeError, OSError) as exc:
                print(f"sqlite {entry['Path']}: FAILED {exc}", file=sys.stderr)
                code = 1
                continue
            what = ", ".join(f"{t} {n}" for t, n in sorted(deleted.items())) or "nothing"
            print(f"sqlite {entry['Path']}: older than {days} days deleted: {what}")
        elif entry["Service"] == "cassandra":
            print(f"cassandra: rows expire by their TTL ({days} days, set by the sink and "
                  "`tracker schema apply`); counters keep their totals")
    return code


def cmd_repeat(args):
    import asyncio
    from engine.config import load_config
    from engine.kafka import repeat
    from engine.logs import configure
    configure("info", "repeat")
    if args.batch < 1 or args.ack_wait <= 0 or args.partitions < 0:
        print("repeat: --batch must be >= 1, --ack-wait > 0, --partitions >= 0",
              file=sys.stderr)
        return 2
    cfg = load_config(args.config) if args.config else None
    try:
        repeat.build(args, cfg)          # every argument checked before connecting
    except ValueError as exc:
        print(f"repeat: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(repeat.main(args, cfg))


def main(argv=None):
    args = build_parser().parse_args(argv)
    handler = {"serve": cmd_serve, "check-config": cmd_check_config,
               "stats": cmd_stats, "schema": cmd_schema, "repeat": cmd_repeat,
               "erase": cmd_erase, "prune": cmd_prune, "report": cmd_report}[args.command]
    try:
        code = handler(args)
    except ConfigError as exc:   # every command but serve, which logs it as JSON
        print(exc, file=sys.stderr)
        code = 2
    sys.exit(code)


if __name__ == "__main__":
    main()
