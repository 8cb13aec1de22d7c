"""The ``tracker`` command line."""
import argparse
import os
import sys

from engine import __version__
from engine.errors import ConfigError

DEFAULT_CONFIG = os.environ.get("TRACKER_CONFIG", "config.json")


def _add_report_command(sub):
    from engine.reports import KINDS
    report = sub.add_parser("report", help="growth and audience reports from the embedded store")
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
    return parser


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
    from engine.reports import ReportError, open_store, render, run
    from engine.reports.timerange import RangeError, parse_range
    cfg = load_config(args.config)
    path = _sqlite_path(cfg)
    if path is None:
        print("no sqlite store in Notify; `tracker report` reads the embedded store "
              "(reports from Cassandra are not built yet)", file=sys.stderr)
        return 2
    steps = [s.strip() for s in (args.steps or "").split(",") if s.strip()]
    try:
        start, end = parse_range(args.since, args.until)
        conn = open_store(path)
        try:
            report = run(args.kind, conn, start, end, steps=steps, outcome=args.outcome,
                         control=args.control)
        finally:
            conn.close()
    except (ReportError, RangeError) as exc:
        print(f"tracker report: {exc}", file=sys.stderr)
        return 2
    for note in report.notes:
        print("warning:", note, file=sys.stderr)
    print(render.as_json(report) if args.json else render.as_csv(report) if args.csv
          else render.as_text(report))
    return 0


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


def main(argv=None):
    args = build_parser().parse_args(argv)
    handler = {"serve": cmd_serve, "check-config": cmd_check_config,
               "stats": cmd_stats, "schema": cmd_schema,
               "report": cmd_report}[args.command]
    try:
        code = handler(args)
    except ConfigError as exc:   # every command but serve, which logs it as JSON
        print(exc, file=sys.stderr)
        code = 2
    sys.exit(code)


if __name__ == "__main__":
    main()
