"""The Cassandra sink: sink.py (the Sink), plan.py (a batch as
single-partition requests), wire_acsylla.py / wire_datastax.py (the driver),
cql.py (statements and schema), stamps.py (write timestamps), daily.py (the
proxy's daily-limit read)."""
from engine.store.sinks.cassandra.daily import CassandraDailyRead
from engine.store.sinks.cassandra.sink import CassandraSink, SchemaMismatch
from engine.store.sinks.cassandra.stamps import earliest_ts, latest_ts

__all__ = ("CassandraSink", "CassandraDailyRead", "SchemaMismatch", "earliest_ts", "latest_ts")
