"""How the Cassandra sink groups row writes into UNLOGGED batch requests."""
import tempfile

import pytest
from cassandra.query import BatchStatement, BatchType

from engine.config import config_from_dict
from engine.sinks.cassandra import CassandraSink


def sink(**entry):
    cfg = config_from_dict({"TLS": "off", "SpoolDirectory": tempfile.mkdtemp(), "Notify": [
        {"Service": "cassandra", "Hosts": ["127.0.0.1:1"], **entry}]})
    return CassandraSink(cfg.notify[0], cfg)


ROW, LWT = "INSERT INTO ks.t (a) VALUES (%s)", "INSERT INTO ks.v (a) VALUES (%s) IF NOT EXISTS"


def test_rows_go_in_unlogged_batches_of_row_batch_statements():
    s = sink(RowBatch=4)
    items = [(ROW, [i]) for i in range(10)]
    requests = s.batched(items)
    assert [len(b) for b, _ in requests] == [4, 4, 2]
    for batch, params in requests:
        assert isinstance(batch, BatchStatement) and params is None
        assert batch.batch_type == BatchType.UNLOGGED and batch.is_idempotent


def test_conditional_inserts_stay_one_per_request():
    s = sink(RowBatch=8)
    s._conditional = {LWT}
    items = [(ROW, [1]), (LWT, [2]), (ROW, [3]), (LWT, [4])]
    requests = s.batched(items)
    assert [(r, p) for r, p in requests if r == LWT] == [(LWT, [2]), (LWT, [4])]
    batches = [r for r, _ in requests if isinstance(r, BatchStatement)]
    assert [len(b) for b in batches] == [2]


def test_row_batch_one_sends_each_statement_alone():
    items = [(ROW, [i]) for i in range(3)]
    assert sink(RowBatch=1).batched(items) == items


def test_default_and_bounds():
    assert sink().row_batch == 8
    for bad in (0.5, 65, -1):
        with pytest.raises(ValueError, match="RowBatch"):
            sink(RowBatch=bad)
