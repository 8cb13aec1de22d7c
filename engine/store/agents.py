"""User agents, read in the store processes (never on the request path):
browser family, OS and device where the client did not send them, and
robots (``Bots``: ``"keep"``, ``"flag"`` or ``"drop"``).

Parsing is ua-parser's maintained regexes (the ``ua-parser-builtins`` data,
compiled by ``ua-parser-rs`` when installed): tens to hundreds of
microseconds a string, so each distinct user agent is parsed once and kept
(``CACHE_MAX`` of them; real traffic has a few thousand). The cache is keyed
by the whole string rather than ``bhash``: a 32-bit hash over tens of
thousands of agents would collide and give one browser another's family. A robot is what
ua-parser calls a ``Spider`` device, or a user agent whose family or text
names an automation tool or crawler (HeadlessChrome, curl, Wget, HTTP
libraries, "bot", "crawl", "spider" ...) — isbot's approach, kept short.

What an event gains: ``os`` and ``device`` when it had none, and in
``params`` ``browser_family`` (``browser`` itself stays the user agent, as
the Go collector stored it), plus ``bot`` = ``"true"`` under ``"flag"``.
Under ``"drop"`` a robot's event is written to no store.
"""
import re

from ua_parser import parse

BOT_MODES = ("keep", "flag", "drop")
CACHE_MAX = 50_000

TOOL_FAMILIES = frozenset({
    "HeadlessChrome", "curl", "Wget", "Python Requests", "Python-urllib", "Go-http-client",
    "Apache-HttpClient", "PhantomJS", "libwww-perl", "okhttp-bot", "Java",
})
ROBOT_WORDS = re.compile(
    r"bot\b|bot/|crawl|spider|slurp|headless|scrap|curl/|wget/|python-|httpclient|"
    r"go-http-client|java/|libwww|phantomjs|selenium|puppeteer|playwright|lighthouse|"
    r"facebookexternalhit|preview|monitor|uptime|check_http|pingdom", re.IGNORECASE)


class Agent:
    __slots__ = ("family", "os", "device", "bot")

    def __init__(self, family, os, device, bot):
        self.family, self.os, self.device, self.bot = family, os, device, bot


def read_agent(text):
    """One user agent string: its Agent (families, or None when unknown)."""
    result = parse(text)
    family = result.user_agent.family if result.user_agent else None
    os = result.os.family if result.os else None
    device = result.device.family if result.device else None
    bot = device == "Spider" or family in TOOL_FAMILIES or bool(ROBOT_WORDS.search(text))
    return Agent(_known(family), _known(os), None if device == "Spider" else _known(device),
                 bot)


def _known(family):
    return None if family in (None, "Other") else family


# ua-parser builds its matchers on first use: 0.1-0.5 s of CPU that would
# otherwise delay a store process's first batch (and, in a short benchmark,
# look like a per-event cost of the store: bench_cassandra section 3).
WARM_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
    "like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
)


class Agents:
    """Per store stage: ``apply(events)`` fills, flags, and returns the
    events to write (robots' removed under ``"drop"``). Made with the
    parser's matchers built (WARM_AGENTS)."""

    def __init__(self, bots="keep"):
        self.bots = bots
        self.cache = {}
        self.robots = 0                  # robots seen (flagged or dropped)
        for text in WARM_AGENTS:
            read_agent(text)

    def agent(self, text):
        found = self.cache.get(text)
        if found is None:
            if len(self.cache) >= CACHE_MAX:
                self.cache.clear()
            found = self.cache[text] = read_agent(text)
        return found

    def apply(self, events, again=False):
        """``again``: a batch built a second time (its transaction rolled
        back): its robots were counted the first time."""
        drop = self.bots == "drop"
        kept = []
        for event in events:
            text = event.get("browser")
            if text:
                agent = self.agent(text)
                if agent.bot:
                    self.robots += not again
                    if drop:
                        continue
                self._fill(event, agent)
            kept.append(event)
        return kept

    def _fill(self, event, agent):
        if agent.os and not event.get("os"):
            event["os"] = agent.os
        if agent.device and not event.get("device"):
            event["device"] = agent.device
        if agent.family or (agent.bot and self.bots == "flag"):
            params = event.get("params")
            if params is None:
                params = event["params"] = {}
            if agent.family:
                params.setdefault("browser_family", agent.family)
            if agent.bot and self.bots == "flag":
                params["bot"] = "true"
