"""The ingest stage imports no store: the HTTP worker module pulls in no sink,
no store client library and no SQLite (DESIGN.md §1)."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_the_http_worker_imports_no_sink_and_no_store_client():
    code = ("import sys, workers.http; print(' '.join(sorted(m for m in sys.modules if "
            "m.startswith(('engine.store', 'cassandra', 'nats', 'sqlite3', '_sqlite3')))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True, timeout=60).stdout
    assert out.strip() == ""


def test_the_store_worker_does_import_them():
    code = "import sys, workers.store; print('engine.store.stage' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True, timeout=60).stdout
    assert out.strip() == "True"
