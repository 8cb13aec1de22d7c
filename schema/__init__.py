"""Store schemas (SQL / CQL files), shipped as package data.

``schema_text("sqlite.sql")`` returns a file's text wherever the package is
installed.
"""
from importlib.resources import files


def schema_text(name):
    return (files(__package__) / name).read_text(encoding="utf-8")
