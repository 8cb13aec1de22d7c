"""Tracker engine: the library behind the `tracker` command.

Config, parsing, routing, batching, sinks and metrics live here; `workers/`
holds one module per kind of child process that uses them.
"""

__version__ = "0.1.0"
