"""What a tracked request may reveal: IP anonymisation, Do-Not-Track and
cookie consent, decided before its event is spooled.

- ``IPAnonymize``: ``"off"`` (default); ``"truncate"`` (IPv4 to its /24, IPv6
  to its /48); ``"hash"`` (keyed BLAKE2b of the address, ``h:`` and 16 hex
  digits, the key rotated every UTC day). The rate limits and the daily cap
  still see the real address, in memory only.
- ``DoNotTrack``: what a request with ``DNT: 1`` or ``Sec-GPC: 1`` gets:
  ``"ignore"`` (default: stored as any other), ``"anonymize"`` (its address
  anonymised as ``IPAnonymize`` says, or truncated when that is off, and the
  cookieless visitor id below, no cookie set), ``"drop"`` (answered as usual,
  stored nowhere).
- ``ConsentCookie`` (a cookie name, e.g. ``"CookieConsent"``): until the
  request carries that cookie with a consenting value (anything but empty,
  ``0``, ``false``, ``no``, ``deny``, ``denied``), no ``vid`` cookie is set
  and the visitor id is a daily-salted hash of (site, address, user agent) —
  the cookieless model of Plausible and Umami: one visitor per day and site,
  not followed across days.

The hashing key lives only in memory: ``node_secret()`` is drawn once in the
supervisor before it forks (every worker hashes alike) and never written; a
restart draws a new one, so hashes from before a restart do not match.
"""
import hashlib
import ipaddress
import os
import time
import uuid

IP_MODES = ("off", "truncate", "hash")
DNT_MODES = ("ignore", "anonymize", "drop")
REFUSALS = (b"", b"0", b"false", b"no", b"deny", b"denied")
CACHE_MAX = 65536

_secret = None


def node_secret():
    """The node's hashing secret (drawn on first use: the supervisor calls
    this before forking so that its workers share it)."""
    global _secret
    if _secret is None:
        _secret = os.urandom(32)
    return _secret


def active(config):
    return (config.ip_anonymize != "off" or config.do_not_track != "ignore"
            or bool(config.consent_cookie))


class Decision:
    __slots__ = ("ip", "vid", "set_cookie", "drop")

    def __init__(self, ip, vid=None, set_cookie=True, drop=False):
        self.ip = ip                    # the address to store
        self.vid = vid                  # the visitor id to use (bytes), or None: as usual
        self.set_cookie = set_cookie    # may the answer set the vid cookie?
        self.drop = drop                # answer, store nothing


class Privacy:
    def __init__(self, config, secret=None):
        self.ip_mode = config.ip_anonymize
        self.dnt_mode = config.do_not_track
        self.consent = config.consent_cookie.encode("latin-1") if config.consent_cookie else None
        self.site = (config.domains[0] if config.domains else "").encode()
        self.secret = secret or node_secret()
        self.day = None
        self.key = b""
        self.cache = {}                 # (mode, ip) -> stored address, today

    # ---- the decision ----------------------------------------------------
    def decide(self, ip, dnt, gpc, cookie, user_agent, origin):
        """``ip`` the real address (str); the headers as bytes or None;
        ``origin`` (the page's site, when the browser sent one) names the
        site of a cookieless visitor, else the first of Domains."""
        self._today()
        opted_out = _is_one(dnt) or _is_one(gpc)
        if opted_out and self.dnt_mode == "drop":
            return Decision(ip, drop=True, set_cookie=False)
        mode, cookieless = self.ip_mode, False
        if opted_out and self.dnt_mode == "anonymize":
            mode = self.ip_mode if self.ip_mode != "off" else "truncate"
            cookieless = True
        if self.consent is not None and not self.consented(cookie):
            cookieless = True
        vid = self.cookieless_vid(origin, ip, user_agent) if cookieless else None
        return Decision(self.address(ip, mode), vid, not cookieless)

    def consented(self, cookie):
        if cookie is None:
            return False
        for part in cookie.split(b";"):
            name, sep, value = part.strip().partition(b"=")
            if sep and name == self.consent:
                return value.strip().strip(b'"').lower() not in REFUSALS
        return False

    # ---- anonymisation ---------------------------------------------------
    def stored_address(self, ip):
        """``ip`` as IPAnonymize stores it (what ``dailies`` counts by)."""
        self._today()
        return self.address(ip, self.ip_mode)

    def address(self, ip, mode):
        if mode == "off":
            return ip
        found = self.cache.get((mode, ip))
        if found is None:
            found = truncate(ip) if mode == "truncate" else self._hash(ip)
            if len(self.cache) >= CACHE_MAX:
                self.cache.clear()
            self.cache[(mode, ip)] = found
        return found

    def _hash(self, ip):
        digest = hashlib.blake2b(ip.encode(), digest_size=8, key=self.key, person=b"tracker-ip")
        return "h:" + digest.hexdigest()

    def cookieless_vid(self, origin, ip, user_agent):
        """A UUID (version 4 layout) from the day's key, the site, the
        address and the user agent: bytes, as a cookie's value would be."""
        site = origin or self.site
        digest = hashlib.blake2b(b"\0".join((site, ip.encode(), user_agent or b"")),
                                 digest_size=16, key=self.key, person=b"tracker-vid")
        return str(uuid.UUID(bytes=digest.digest(), version=4)).encode()

    def _today(self):
        day = utc_day()
        if day != self.day:
            self.day = day
            self.key = hashlib.blake2b(day.encode(), key=self.secret, digest_size=32).digest()
            self.cache.clear()


def utc_day():
    return time.strftime("%Y-%m-%d", time.gmtime())


def truncate(ip):
    """IPv4 to its /24, IPv6 to its /48 (an unparsable address to "")."""
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ""
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)


def _is_one(value):
    return value is not None and value.strip() == b"1"
