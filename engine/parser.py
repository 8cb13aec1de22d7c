"""Choosing the event parser: the compiled one, unless told otherwise.

``TRACKER_PURE_PARSE=1`` selects the pure-Python reference (for debugging and
for running the test suite against both); otherwise the Cython module is
required and its absence is an installation error, not a silent slowdown.
"""
import os


def load_parser():
    if os.environ.get("TRACKER_PURE_PARSE") == "1":
        from engine import parse_ref
        return parse_ref
    try:
        from engine import _parse
    except ImportError as exc:
        raise RuntimeError("the compiled parser engine._parse is missing: "
                           "install with `pip install .` (it builds the Cython "
                           "extension)") from exc
    return _parse
