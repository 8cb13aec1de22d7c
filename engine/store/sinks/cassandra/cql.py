"""The CQL the sink sends: schema statements and the prepared writes.

Every statement names its keyspace, so prepared statements carry it and a
driver can route them by partition key without a ``USE``.
"""
import re

from engine.event import COLUMNS
from engine.store import fanout
from engine.store.fanout import EARLIEST
from schema import schema_text

DEFAULT_REPLICATION = {"class": "NetworkTopologyStrategy", "replication_factor": 1}
KEYSPACE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")


class RowTable:
    """A fan-out row table: its key, its prepared columns (key, created, eid,
    the rest) and which event it keeps (fanout.EARLIEST or LATEST)."""

    def __init__(self, name, key, cols, keep):
        self.name, self.key, self.keep = name, key, keep
        self.cols = key + ("created", "eid") + tuple(c for c in cols if c not in key)

    def insert_cql(self, keyspace, paxos=False):
        cols = ", ".join(self.cols)
        marks = ", ".join("?" * len(self.cols))
        if paxos:
            return f"INSERT INTO {keyspace}.{self.name} ({cols}) VALUES ({marks}) IF NOT EXISTS"
        return f"INSERT INTO {keyspace}.{self.name} ({cols}) VALUES ({marks}) USING TIMESTAMP ?"


ROW_TABLES = tuple(RowTable(*spec) for spec in fanout.ROW_TABLES)
COUNTER_TABLES = fanout.COUNTER_TABLES
LOG_COLUMNS = ("ldate", "created", "ltime", "id", "name", "host", "hostname", "owner", "ip",
               "level", "msg", "params")


def counter_cql(keyspace, table):
    where = " AND ".join(f"{k} = ?" for k in COUNTER_TABLES[table])
    return f"UPDATE {keyspace}.{table} SET total = total + ? WHERE {where}"


def statements(keyspace, paxos=False):
    """{name: CQL} of every prepared statement the sink uses. ``events``
    binds the event's columns (engine/event.py COLUMNS) in that order."""
    out = {"events": f"INSERT INTO {keyspace}.events ({', '.join(COLUMNS)}) "
                     f"VALUES ({', '.join('?' * len(COLUMNS))})"}
    for t in ROW_TABLES:
        out[t.name] = t.insert_cql(keyspace, paxos and t.keep == EARLIEST)
    for table in COUNTER_TABLES:
        out[table] = counter_cql(keyspace, table)
    out["logs"] = (f"INSERT INTO {keyspace}.logs ({', '.join(LOG_COLUMNS)}) "
                   f"VALUES ({', '.join('?' * len(LOG_COLUMNS))})")
    out["updates"] = (f"INSERT INTO {keyspace}.updates (id, updated, msg, params) "
                      f"VALUES (?, ?, ?, ?) USING TIMESTAMP ?")
    out["dailies.read"] = f"SELECT total FROM {keyspace}.dailies WHERE ip = ? AND day = ?"
    return out


def replication_cql(value):
    """``Replication`` (a dict or CQL map text) -> CQL map literal."""
    if value is None:
        value = DEFAULT_REPLICATION
    if isinstance(value, str):
        text = value.strip()
        if not (text.startswith("{") and text.endswith("}") and "class" in text):
            raise ValueError(f"cassandra Replication: got {value!r}, expected a CQL map such "
                             "as {'class': 'NetworkTopologyStrategy', 'dc1': 3}")
        return text
    if not isinstance(value, dict) or "class" not in value:
        raise ValueError(f"cassandra Replication: got {value!r}, expected an object with "
                         '"class", e.g. {"class": "NetworkTopologyStrategy", "dc1": 3}')
    parts = []
    for k, v in value.items():
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", str(k)) or not re.fullmatch(r"[A-Za-z0-9_.\-:]+", str(v)):
            raise ValueError(f"cassandra Replication: bad entry {k!r}: {v!r}")
        parts.append(f"'{k}': '{v}'")
    return "{" + ", ".join(parts) + "}"


def schema_statements(keyspace, replication):
    """The statements of schema/cassandra.cql for ``keyspace``."""
    text = schema_text("cassandra.cql")
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("--")]
    out = []
    for stmt in "\n".join(lines).split(";"):
        stmt = stmt.strip()
        if stmt:
            out.append(stmt.replace("{keyspace}", keyspace).replace("{replication}", replication))
    return out


def object_of(stmt):
    """("keyspace"|"type"|"table", name) created by a CREATE statement."""
    m = re.match(r"CREATE\s+(KEYSPACE|TYPE|TABLE)\s+IF\s+NOT\s+EXISTS\s+([\w.]+)", stmt, re.I)
    kind, name = m.group(1).lower(), m.group(2)
    return kind, name.split(".")[-1]
