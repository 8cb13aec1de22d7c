"""How the Cassandra sink groups row writes into UNLOGGED batch requests."""
import tempfile

import pytest
from cassandra.cqltypes import UTF8Type
from cassandra.protocol import ColumnMetadata
from cassandra.query import BatchStatement, BatchType, PreparedStatement

from engine.config import config_from_dict
from engine.store.sinks.cassandra import BATCH_VALUE_BYTES, CELL_OVERHEAD, CassandraSink


def sink(**entry):
    cfg = config_from_dict({"TLS": "off", "SpoolDirectory": tempfile.mkdtemp(), "Notify": [
        {"Service": "cassandra", "Hosts": ["127.0.0.1:1"], **entry}]})
    return CassandraSink(cfg.notify[0], cfg)


def prepared(query):
    """A prepared statement of one text column, as the driver builds it from
    the server's answer (no server needed to bind values)."""
    column = ColumnMetadata("ks", "t", "a", UTF8Type)
    return PreparedStatement([column], b"id", [0], query, "ks", 5, None, None)


ROW = prepared("INSERT INTO ks.t (a) VALUES (?)")
LWT = prepared("INSERT INTO ks.v (a) VALUES (?) IF NOT EXISTS")


def test_rows_go_in_unlogged_batches_of_row_batch_statements():
    s = sink(RowBatch=4)
    items = [(ROW, [str(i)]) for i in range(10)]
    requests = s.batched(items)
    assert [len(b) for b, _ in requests] == [4, 4, 2]
    for batch, params in requests:
        assert isinstance(batch, BatchStatement) and params is None
        assert batch.batch_type == BatchType.UNLOGGED and batch.is_idempotent


def test_conditional_inserts_stay_one_per_request():
    s = sink(RowBatch=8)
    s._conditional = {LWT}
    items = [(ROW, ["1"]), (LWT, ["2"]), (ROW, ["3"]), (LWT, ["4"])]
    requests = s.batched(items)
    assert [(r, p) for r, p in requests if r is LWT] == [(LWT, ["2"]), (LWT, ["4"])]
    batches = [r for r, _ in requests if isinstance(r, BatchStatement)]
    assert [len(b) for b in batches] == [2]


def test_batches_stay_under_the_value_budget():
    # Cassandra warns about every batch over 5 KiB: big rows go fewer at a time
    big = "x" * (BATCH_VALUE_BYTES // 3 - CELL_OVERHEAD)
    requests = sink(RowBatch=8).batched([(ROW, [big]) for _ in range(7)])
    assert [len(b) for b, _ in requests] == [3, 3, 1]


def test_row_batch_one_sends_each_statement_alone():
    items = [(ROW, [str(i)]) for i in range(3)]
    assert sink(RowBatch=1).batched(items) == items


def test_default_and_bounds():
    assert sink().row_batch == 8 and sink(RowBatch=0).row_batch == 8   # 0: the Go zero value
    for bad in (0.5, 65, -1, "8"):
        with pytest.raises(ValueError, match="RowBatch: got"):
            sink(RowBatch=bad)
    with pytest.raises(ValueError, match="Concurrency: got 'many'"):
        sink(Concurrency="many")


def test_check_config_reports_a_bad_store_key(tmp_path):
    import json
    import subprocess
    import sys
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"TLS": "off", "Notify": [
        {"Service": "sqlite", "Path": str(tmp_path / "t.db")},
        {"Service": "cassandra", "Hosts": ["127.0.0.1"], "RowBatch": 100}]}))
    run = subprocess.run([sys.executable, "-m", "engine.cli", "check-config", "--config",
                          str(path)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "Notify[1] (cassandra): cassandra RowBatch: got 100, expected an integer, 1 to 64" \
        in run.stderr
