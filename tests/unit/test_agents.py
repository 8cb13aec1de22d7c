"""engine/store/agents.py: user agents read in the store, robots kept, flagged or dropped."""
import pytest

from engine.store.agents import Agents, read_agent

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1")
HEADLESS = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "HeadlessChrome/120.0.0.0 Safari/537.36")
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


@pytest.mark.parametrize("text,bot", [
    (FIREFOX, False), (IPHONE, False), (HEADLESS, True), (GOOGLEBOT, True),
    ("curl/8.5.0", True), ("Wget/1.21.4", True), ("python-requests/2.31.0", True),
    ("Go-http-client/1.1", True), ("facebookexternalhit/1.1", True),
    ("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", True),
])
def test_robots_are_recognised(text, bot):
    assert read_agent(text).bot is bot


def test_families_os_and_device():
    agent = read_agent(IPHONE)
    assert (agent.family, agent.os, agent.device) == ("Mobile Safari", "iOS", "iPhone")
    agent = read_agent(FIREFOX)
    assert (agent.family, agent.os, agent.device) == ("Firefox", "Linux", None)


def events():
    return [{"browser": FIREFOX, "params": {}}, {"browser": GOOGLEBOT},
            {"browser": IPHONE, "os": "custom-os", "params": {"browser_family": "mine"}},
            {"ename": "no agent"}]


def test_keep_fills_what_the_client_did_not_send():
    out = Agents("keep").apply(events())
    assert len(out) == 4
    assert out[0]["os"] == "Linux" and out[0]["params"] == {"browser_family": "Firefox"}
    assert out[1]["params"] == {"browser_family": "Googlebot"} and "bot" not in out[1]["params"]
    assert out[2]["os"] == "custom-os" and out[2]["device"] == "iPhone"
    assert out[2]["params"]["browser_family"] == "mine"
    assert out[3] == {"ename": "no agent"}


def test_flag_marks_robots():
    agents = Agents("flag")
    out = agents.apply(events())
    assert [e.get("params", {}).get("bot") for e in out] == [None, "true", None, None]
    assert agents.robots == 1


def test_drop_removes_robots_only():
    agents = Agents("drop")
    out = agents.apply(events())
    assert [e.get("browser") for e in out] == [FIREFOX, IPHONE, None]
    assert agents.robots == 1
    again = agents.apply(events(), again=True)     # a rolled-back batch, rebuilt
    assert again == out and agents.robots == 1


def test_each_agent_is_parsed_once():
    agents = Agents("flag")
    agents.apply(events() + events())
    assert len(agents.cache) == 3
