"""Exceptions shared by the compiled parser, its reference and the engine.

Kept in plain Python so both parser implementations raise the same classes.
"""


class ParseError(ValueError):
    """A request could not be turned into an event (answered 400).

    The message is short and safe to send back to the client.
    """


class ConfigError(ValueError):
    """A config key has the wrong type or value (fatal at start)."""
