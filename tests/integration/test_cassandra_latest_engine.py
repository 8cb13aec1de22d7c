"""The sink on a node with the storage engine Cassandra 5 recommends for new
clusters (its conf/cassandra_latest.yaml: trie memtables off-heap, BTI
sstables, the unified compaction strategy; scripts/cassandra_node.py
ENGINES["latest"]), which docs/cassandra.md measures beside the default one.

The same tests as test_cassandra.py's, imported: pytest runs them here against
this module's ``node`` (and the ``cql`` session and ``sink_ks`` keyspace made
on it)."""
import pytest

from cassandra_fixtures import cql, node_module  # noqa: F401
from test_cassandra import (sink_ks, test_first_write_wins_latest_wins_and_replays,  # noqa: F401
                            test_sqlite_and_cassandra_store_one_corpus_alike_table_by_table)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    n = node_module().CassandraNode(str(tmp_path_factory.mktemp("cassandra_latest_engine")),
                                    heap="1g", engine="latest")
    n.start()
    print(f"cassandra node (latest engine) up in {n.start_seconds:.1f} s on port {n.native_port}")
    yield n
    n.stop()


def test_the_node_runs_the_latest_engine(cql):
    settings = {r.name: r.value for r in cql.execute("SELECT name, value FROM system_views.settings")}
    assert settings.get("sstable.selected_format", settings.get("sstable_selected_format")) == "bti"
    assert settings.get("memtable_allocation_type") == "offheap_objects"
    assert settings.get("storage_compatibility_mode") == "NONE"
