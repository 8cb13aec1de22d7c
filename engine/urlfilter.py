"""``UrlPrefixFilter``: the Go collector's URL rewriting rule.

The Go collector compiled ``UrlPrefixFilter`` as a regular expression and
applied it to an event's ``url``, its ``last`` and the request URI of
non-tracking (proxied, static) requests. On a match the value became the
*last capture group* of the match, cut at its first ``?``. Its own config
ships ``http(s|)://(localhost|dev\\.sfproductlabs\\.com)(:[0-9]*|)(/.*)``,
which turns ``https://localhost:5001/cw.html?x=1`` into ``/cw.html``.

A pattern without a capture group keeps the meaning this collector gave the
key before it followed Go (a prefix): what the pattern matches at the start
of the value is removed, and nothing is cut. Go's rule would replace the
value with the match itself, which no one would configure on purpose.

Patterns are Python regular expressions; the RE2 syntax Go configs use
(groups, alternation, classes, repetition) means the same in both.
"""
import re

from engine.errors import ConfigError


class UrlFilter:
    """A compiled ``UrlPrefixFilter``; calling it rewrites one value."""

    __slots__ = ("pattern", "regex", "groups")

    def __init__(self, pattern):
        try:
            self.regex = re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"UrlPrefixFilter: got {pattern!r}, not a valid regular "
                              f"expression ({exc})") from None
        self.pattern = pattern
        self.groups = self.regex.groups

    def __call__(self, value):
        if self.groups:
            match = self.regex.search(value)
            if match is None:
                return value
            kept = match.group(self.groups) or ""   # a group that took no part: ""
            return kept.partition("?")[0]
        match = self.regex.match(value)
        return value if match is None else value[match.end():]

    def __repr__(self):
        return f"UrlFilter({self.pattern!r})"


def url_filter(pattern):
    """The filter for a config value, or None when the key is empty."""
    return UrlFilter(pattern) if pattern else None
