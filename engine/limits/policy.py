"""Rate-limit policy from config: rates and bursts per route class.

``"RateLimit": {"PerIPRate": r, "PerIPBurst": b, "GlobalRate": r,
"GlobalBurst": b, "Track": {...}, "Proxy": {...}, "Static": {...},
"Service": {...}}`` — requests per second and bucket sizes; 0 turns a limit
off; a burst left out defaults to one second's worth of its rate (at least
1). A class object overrides only the keys it names.
"""
import ipaddress

from engine.errors import ConfigError

TRACK, PROXY, STATIC, SERVICE = range(4)
CLASS_KEYS = {"Track": TRACK, "Proxy": PROXY, "Static": STATIC, "Service": SERVICE}
CLASS_NAMES = {v: k.lower() for k, v in CLASS_KEYS.items()}
LIMIT_KEYS = ("PerIPRate", "PerIPBurst", "GlobalRate", "GlobalBurst")


def _number(where, key, value, problems):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        problems.append(f"RateLimit{where}.{key}: got {value!r}, expected a number >= 0 "
                        "(requests per second, or a bucket size; 0 = off)")
        return 0.0
    return float(value)


def _limits(obj, where, inherited, problems):
    values = dict(inherited)
    for key, value in obj.items():
        if key in LIMIT_KEYS:
            values[key] = _number(where, key, value, problems)
        elif where or key not in CLASS_KEYS:
            problems.append(f"RateLimit{where}.{key}: unknown key, expected one of "
                            + ", ".join(LIMIT_KEYS + (() if where else tuple(CLASS_KEYS))))
    return values


def _as_params(values):
    """(ip_rate, ip_burst, global_rate, global_burst); a burst of 0 = off."""
    def pair(rate, burst):
        if rate <= 0:
            return 0.0, 0.0
        return rate, burst if burst > 0 else max(1.0, rate)
    ip = pair(values["PerIPRate"], values["PerIPBurst"])
    glob = pair(values["GlobalRate"], values["GlobalBurst"])
    return ip + glob


def parse_rate_limit(raw, problems):
    """Per-class parameter tuples, indexed by class number."""
    base = _limits(raw, "", dict.fromkeys(LIMIT_KEYS, 0.0), problems)
    params = [_as_params(base)] * len(CLASS_KEYS)
    for name, cls in CLASS_KEYS.items():
        sub = raw.get(name)
        if sub is None:
            continue
        if not isinstance(sub, dict):
            problems.append(f"RateLimit.{name}: got {sub!r}, expected an object")
            continue
        params[cls] = _as_params(_limits(sub, "." + name, base, problems))
    return tuple(params)


def parse_trusted_proxies(raw, problems):
    for cidr in raw:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except (TypeError, ValueError):
            problems.append(f"TrustedProxies: got {cidr!r}, expected a CIDR like 10.0.0.0/8")


def any_enabled(params):
    return any(p[1] > 0 or p[3] > 0 for p in params)


__all__ = ["parse_rate_limit", "parse_trusted_proxies", "any_enabled", "ConfigError"]
