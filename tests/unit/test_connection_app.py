"""Every app behind HttpConnection provides what the connection calls
(engine.http.protocol.ConnectionApp)."""
import inspect

from engine.http.protocol import ConnectionApp
from engine.ingest.admin import AdminApp
from engine.ingest.app import TrackerApp
from engine.tls.plainport import PlainPortApp

CALLED = [name for name, _ in inspect.getmembers(ConnectionApp, inspect.isfunction)
          if not name.startswith("_")]


def test_the_protocol_lists_what_the_connection_calls():
    import engine.http._connection as compiled
    source = open(compiled.__file__.replace(".cpython-311-x86_64-linux-gnu.so", ".pyx")).read()
    used = {name for name in CALLED if f"app.{name}(" in source}
    assert used == set(CALLED)


def test_each_app_class_provides_it():
    for cls in (TrackerApp, AdminApp, PlainPortApp):
        missing = [name for name in CALLED if not callable(getattr(cls, name, None))]
        assert not missing, (cls.__name__, missing)
