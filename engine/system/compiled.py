"""Choosing between a compiled module and its pure-Python twin.

Each compiled stage keeps a twin, selected by an environment variable set to
"1" (for debugging, and for running the tests against both); otherwise the
compiled module is required and its absence is an installation error, not a
silent slowdown.
"""
import importlib
import os


def compiled(module, pure_env):
    """``module`` imported, or None when ``pure_env`` is "1" (use the twin)."""
    if os.environ.get(pure_env) == "1":
        return None
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise RuntimeError(f"the compiled module {module} is missing: install with "
                           "`pip install .` (it builds the Cython extensions)") from exc
