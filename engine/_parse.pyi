"""Types of the compiled parser engine._parse (rules: engine.parse_ref)."""

from typing import Any, Protocol


class _IdSource(Protocol):
    def new(self) -> str: ...


class TimeUUIDGen:
    """Version 1 UUID strings, canonical lowercase, strictly increasing."""

    def __init__(self, node: int | None = None, clock_seq: int | None = None) -> None: ...
    @property
    def node(self) -> int: ...
    @property
    def clock_seq(self) -> int: ...
    def new(self) -> str: ...


def parse_track(
    path: bytes,
    query: bytes | None,
    body: bytes | None,
    ip: str,
    user_agent: str | None,
    accept_language: str | None,
    cookie_vid: str | None,
    now_ms: int,
    ids: _IdSource,
    url_prefix_filter: str,
) -> dict[str, Any]:
    """One track request -> event dict; raises engine.errors.ParseError only."""
    ...
