"""Node counts for a target event rate, from measured costs (docs/scaling.md).

    python loadtest/capacity.py                      # the table for 10k, 100k, 1M events/s
    python loadtest/capacity.py --set cassandra_us_per_event_per_replica=1770 --rates 50000

Every input is a measured figure with the file it comes from; refresh one with
``--set NAME=VALUE`` (or edit INPUTS) when its benchmark is rerun. Nothing here
is measured: it is arithmetic on those inputs, with the assumptions below.
"""
import argparse
import math

# name: (value, unit, source)
INPUTS = {
    # The collector (measured by the project's benchmarks, one core each).
    "ingest_us_per_event": (
        46.1, "µs of collector CPU per event: HTTP + spool + SQLite, keep-alive",
        "docs/ingest.md (loadtest/bench_ingest.py, 1 worker + 1 store on one core, 2026-11-30 09:08)"),
    "sqlite_sink_us_per_event": (
        31.3, "µs of it for the SQLite store stage (left out when SQLite is not a sink)",
        "docs/ingest.md (SQLite row − spool-only row of the same run, 2026-11-30 09:08)"),
    "cassandra_sink_us_per_event": (
        64.0, "µs of collector CPU per event in the Cassandra sink (native wire, planner)",
        "docs/cassandra.md (loadtest/bench_cassandra.py, running collector, 2026-11-30 night)"),
    "nats_sink_us_per_event": (
        56.0, "µs per event in the NATS sink with JetStream acks (1 / 17,731 events/s)",
        "docs/nats.md (loadtest/bench_nats.py, sink alone, 2026-11-28)"),
    # Cassandra: CPU per event on one replica, times the replicas.
    "cassandra_us_per_event_per_replica": (
        510.3, "µs of Cassandra CPU per event on one node (running collector's mix)",
        "docs/cassandra.md (loadtest/bench_cassandra.py, 1 node, 2026-11-29)"),
    "replication_factor": (3, "replicas per write", "docker/swarm/config.json"),
    # NATS.
    "nats_messages_per_core": (
        4900.0, "JetStream messages (stream R3) per core-second of the 3 servers, over idle",
        "tests/integration/test_swarm.py (docs/docker.md, 'The Swarm proof')"),
}

# Assumptions (docs/scaling.md says why).
UTILISATION = 0.6           # plan nodes to run at 60 % CPU: headroom for bursts and a lost node
CORES_PER_NODE = {"collector": 8, "cassandra": 8, "nats": 4}
MINIMUM_NODES = {"collector": 2, "cassandra": 3, "nats": 3}   # redundancy, RF 3, R3 quorum
SPARE_NODES = {"collector": 1, "cassandra": 0, "nats": 0}     # N+1 for stateless ingest
RATES = (10_000, 100_000, 1_000_000)


def cores_needed(rate, inputs, sinks):
    """Cores each tier needs for ``rate`` events/s at 100 % CPU."""
    per_event_us = inputs["ingest_us_per_event"]
    if "cassandra" in sinks:
        per_event_us += inputs["cassandra_sink_us_per_event"]
    if "nats" in sinks:
        per_event_us += inputs["nats_sink_us_per_event"]
    if "sqlite" not in sinks:      # the ingest figure includes SQLite's store stage
        per_event_us -= inputs["sqlite_sink_us_per_event"]
    cores = {"collector": rate * per_event_us / 1e6}
    if "cassandra" in sinks:
        # Each replica applies every write: RF times one node's cost.
        cores["cassandra"] = (rate * inputs["cassandra_us_per_event_per_replica"]
                              * inputs["replication_factor"] / 1e6)
    if "nats" in sinks:
        cores["nats"] = rate / inputs["nats_messages_per_core"]
    return cores


def nodes_for(cores):
    out = {}
    for tier, c in cores.items():
        n = math.ceil(c / UTILISATION / CORES_PER_NODE[tier])
        out[tier] = max(MINIMUM_NODES[tier], n + SPARE_NODES[tier])
    return out


def table(rates, inputs, sinks):
    lines = ["| events/s | tier | cores at 100 % | nodes (vCPU each) |",
             "|---:|---|---:|---:|"]
    for rate in rates:
        cores = cores_needed(rate, inputs, sinks)
        nodes = nodes_for(cores)
        for tier in cores:
            lines.append(f"| {rate:,} | {tier} | {cores[tier]:,.1f} | "
                         f"{nodes[tier]} × {CORES_PER_NODE[tier]} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="replace an input (see INPUTS)")
    parser.add_argument("--rates", default=",".join(str(r) for r in RATES))
    parser.add_argument("--sinks", default="cassandra,nats",
                        help="comma-separated: cassandra, nats, sqlite")
    args = parser.parse_args(argv)
    inputs = {name: value for name, (value, _, _) in INPUTS.items()}
    for item in args.set:
        name, _, value = item.partition("=")
        if name not in inputs:
            parser.error(f"unknown input {name!r}; known: {', '.join(inputs)}")
        inputs[name] = float(value)
    rates = [int(r) for r in args.rates.split(",")]
    print("Inputs:")
    for name, (_, unit, source) in INPUTS.items():
        print(f"  {name} = {inputs[name]:g}  ({unit}; {source})")
    print(f"Assumptions: {UTILISATION:.0%} target CPU, cores per node {CORES_PER_NODE}, "
          f"minimum nodes {MINIMUM_NODES}, spare {SPARE_NODES}\n")
    print(table(rates, inputs, set(args.sinks.split(","))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
