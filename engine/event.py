"""The event: what one tracked request becomes.

An event is a plain ``dict`` keyed by the column names of DESIGN.md §3. It is
sparse: a field the request did not carry is absent (never ``None``). These
keys are always present:

    eid      str   canonical lowercase UUID, server-assigned time-based (v1)
    vid      str   canonical lowercase UUID
    sid      str   canonical lowercase UUID
    created  int   server time of acceptance, milliseconds since the epoch, UTC
    first    bool  first event of a visitor/session (writes visitors, sessions)
    ip       str   resolved client address
    params   dict  str -> str, every key the client sent that is not a column

Optional keys and their types are listed in ``FIELD_TYPES``. ``new_visitor``
(bool, only present and True when the server minted the ``vid``) is a flag
for the sinks (``counters.vids_created``), not a column.

Plain dicts keep the request path cheap (no class instantiation) and
serialise directly with orjson for batches, NATS and the spool.
"""

UUID, INT, FLOAT, BOOL, TEXT, LATLON, VIEWPORT, MAP = (
    "uuid", "int", "float", "bool", "text", "latlon", "viewport", "map")

FIELD_TYPES = {
    "eid": UUID, "vid": UUID, "sid": UUID,
    "created": INT, "duration": INT,
    "score": FLOAT,
    "first": BOOL,
    "latlon": LATLON,   # [lat, lon] floats
    "vp": VIEWPORT,     # [w, h] ints
    "params": MAP,
    **{name: TEXT for name in (
        "uid", "app", "last", "url", "ip", "ptype", "bhash", "auth", "xid",
        "split", "ename", "etyp", "ver", "sink", "targets", "country",
        "culture", "source", "medium", "campaign", "term", "ref", "aff",
        "browser", "device", "os", "tz", "outcome", "username")},
}

COLUMNS = tuple(FIELD_TYPES)
