"""Choosing the event parser: the compiled one, unless told otherwise.

``TRACKER_PURE_PARSE=1`` selects the pure-Python reference (for debugging and
for running the test suite against both); otherwise the Cython module is
required and its absence is an installation error, not a silent slowdown.
"""
from engine.system.compiled import compiled


def load_parser():
    parser = compiled("engine._parse", "TRACKER_PURE_PARSE")
    if parser is None:
        from engine import parse_ref
        return parse_ref
    return parser
