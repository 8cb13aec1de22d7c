"""Where `/rdr/` may send a visitor: no open redirect.

A target is allowed when it is an absolute http(s) URL whose host is one of
the allowed hosts or a subdomain of one. Anything else (other hosts,
scheme-relative ``//evil``, ``javascript:``, backslash tricks, user-info
``https://good@evil``) goes to the default redirect.
"""
from urllib.parse import urlsplit


def normalise_hosts(hosts):
    return tuple(h.strip().lower().rstrip(".") for h in hosts if h and h.strip())


def host_allowed(host, allowed):
    host = host.lower().rstrip(".")
    return any(host == a or host.endswith("." + a) for a in allowed)


def safe_redirect(target, allowed, default):
    """Return ``target`` when it may be followed, else ``default``."""
    if not target or any(c in target for c in "\\\r\n\t") or not allowed:
        return default
    try:
        parts = urlsplit(target)
        host = parts.hostname
    except ValueError:
        return default
    if parts.scheme not in ("http", "https") or not host or parts.username is not None:
        return default
    return target if host_allowed(host, allowed) else default
