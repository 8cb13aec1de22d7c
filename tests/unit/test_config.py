import json

import pytest

from engine.config import config_from_dict, load_config, parse_listen
from engine.errors import ConfigError


def test_go_config_keys_load_unchanged(tmp_path):
    go = {"Domains": ["example.com"], "ApiVersion": 1, "SchemaVersion": 2,
          "StaticDirectory": "pub", "ProxyUrl": "", "UseLocalTLS": True,
          "TLSCert": "cert.pem", "TLSKey": "key.pem", "ProxyPort": ":8080",
          "ProxyPortTLS": ":8443", "ProxyDailyLimit": 100, "ProxyDailyLimitChecker": "cassandra",
          "MaximumConnections": 5000, "ReadTimeoutSeconds": 7, "ReadHeaderTimeoutSeconds": 5,
          "WriteTimeoutSeconds": 7, "IdleTimeoutSeconds": 60, "MaxHeaderBytes": 1048576,
          "DefaultRedirect": "https://example.com", "Debug": True, "UrlPrefixFilter": "https://x",
          "IgnoreInsecureTLS": True, "ProxyForceJson": False,
          "Notify": [{"Service": "cassandra", "Hosts": ["localhost"], "Context": "tracker",
                      "Timeout": 2000, "Connections": 2, "Secure": False, "Critical": True}],
          "Consume": [{"Service": "nats", "Hosts": ["tls://localhost:4222"], "Context": "c",
                       "Filter": [{"Alias": "log", "Id": "tic.log.>"}], "MessageLimit": 10,
                       "ByteLimit": 1024}]}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(go))
    cfg = load_config(str(path))
    assert cfg.tls == "local" and cfg.listen == ("0.0.0.0", 8080)
    assert cfg.listen_tls == ("0.0.0.0", 8443)
    assert cfg.tls_cert == str(tmp_path / "cert.pem")        # relative to the file
    assert cfg.static_directory == str(tmp_path / "pub")
    assert cfg.effective_log_level == "debug" and cfg.redirect_hosts == ["example.com"]
    assert cfg.ignore_insecure_tls is True                  # used by the proxy now
    assert "ProxyForceJson" in cfg.ignored and "Consume[0].Context" in cfg.ignored
    assert not any("ProxyForceJson" in w for w in cfg.warnings)
    assert any("StaticDirectory" in w and "not a directory" in w for w in cfg.warnings)


def test_proxy_url_is_checked_at_load():
    with pytest.raises(ConfigError) as err:
        config_from_dict({"ProxyUrl": "ftp://files.example"})
    assert "ProxyUrl: got 'ftp://files.example', expected http://" in str(err.value)
    cfg = config_from_dict({"ProxyUrl": "https://api.example:8443/v2"})
    assert cfg.proxy_url == "https://api.example:8443/v2"


def test_every_problem_is_reported_with_key_value_and_expectation():
    with pytest.raises(ConfigError) as err:
        config_from_dict({"ApiVersion": "1", "MaxHeaderBytes": 0, "Debug": "yes",
                          "TLS": "maybe", "Notify": [{"Service": "sqlite"}]})
    text = str(err.value)
    assert "ApiVersion: got '1', expected an integer" in text
    assert "MaxHeaderBytes: got 0, expected bytes > 0" in text
    assert "Debug: got 'yes', expected true/false" in text
    assert "TLS: got 'maybe'" in text
    assert "Notify[0].Path: missing" in text


def test_transport_derivation():
    assert config_from_dict({}).tls == "off"
    assert config_from_dict({"Domains": ["example.com"]}).tls == "acme"
    assert config_from_dict({"Domains": ["example.com"], "UseLocalTLS": True,
                             "TLSCert": "c.pem", "TLSKey": "k.pem"}).tls == "local"
    assert config_from_dict({"Domains": ["example.com"], "TLS": "off"}).tls == "off"


def test_acme_keys_and_their_errors(tmp_path):
    cfg = config_from_dict({"Domains": ["example.com", "www.example.com"],
                            "AcmeCacheDirectory": "certs", "AcmeRenewFraction": 0.5},
                           str(tmp_path / "c.json"))
    assert cfg.acme_directory == "https://acme-v02.api.letsencrypt.org/directory"
    assert cfg.acme_cache_directory == str(tmp_path / "certs")
    assert cfg.acme_renew_fraction == 0.5 and cfg.acme_ca_cert == ""
    with pytest.raises(ConfigError) as err:
        config_from_dict({"TLS": "acme", "Domains": ["*.example.com", "10.0.0.1"],
                          "AcmeRenewFraction": 1.5, "AcmeDirectory": "ftp://x"})
    text = str(err.value)
    assert "Domains: got '*.example.com', expected a DNS host name" in text
    assert "Domains: got '10.0.0.1'" in text
    assert "AcmeRenewFraction: got 1.5" in text and "AcmeDirectory: got 'ftp://x'" in text
    with pytest.raises(ConfigError, match='"acme" needs the host names'):
        config_from_dict({"TLS": "acme"})


def test_tls_needs_two_different_ports():
    with pytest.raises(ConfigError, match="ProxyPortTLS: got ':8080', the same address"):
        config_from_dict({"TLS": "local", "TLSCert": "c", "TLSKey": "k",
                          "ProxyPort": "127.0.0.1:8080", "ProxyPortTLS": ":8080"})
    cfg = config_from_dict({"TLS": "local", "TLSCert": "c", "TLSKey": "k",
                            "ProxyPort": "127.0.0.1:8080", "ProxyPortTLS": "127.0.0.1:8443"})
    assert cfg.listen == ("127.0.0.1", 8080) and cfg.listen_tls == ("127.0.0.1", 8443)


def test_defaults_run_the_embedded_store(tmp_path):
    cfg = config_from_dict({}, str(tmp_path / "c.json"))
    assert cfg.notify == [{"Service": "sqlite", "Path": str(tmp_path / "tracker.db")}]
    assert cfg.durability == "spool" and cfg.workers >= 1 and cfg.api_prefix == "v1"
    assert cfg.spool_directory == str(tmp_path / "spool")


def test_overrides_win_over_the_file():
    cfg = config_from_dict({"ProxyPort": ":9000", "Workers": 4},
                           overrides={"proxy_port": "127.0.0.2:9100", "workers": 1})
    assert cfg.listen == ("127.0.0.2", 9100) and cfg.workers == 1


@pytest.mark.parametrize("text,expected", [
    (":8080", ("0.0.0.0", 8080)), ("127.0.0.1:80", ("127.0.0.1", 80)),
    ("[::1]:8080", ("::1", 8080)), (8080, ("0.0.0.0", 8080))])
def test_parse_listen(text, expected):
    assert parse_listen(text) == expected


@pytest.mark.parametrize("bad", [":0", ":70000", "host:", "host:http"])
def test_parse_listen_rejects(bad):
    with pytest.raises(ConfigError, match="ProxyPort"):
        parse_listen(bad)


def test_shipped_config_is_valid():
    import os
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cfg = load_config(os.path.join(root, "config.json"))
    assert cfg.tls == "off" and cfg.listen == ("127.0.0.1", 8080)
    assert cfg.notify[0]["Service"] == "sqlite"


# ---- Go collector entries: unknown services, keys not read --------------------------

def test_unknown_services_are_skipped_naming_what_exists():
    cfg = config_from_dict({
        "Notify": [{"Service": "cassandar", "Hosts": ["127.0.0.1"]},
                   {"Service": "sqlite", "Path": "t.db"}],
        "Consume": [{"Service": "http", "Note": "Not implemented"},
                    {"Service": "nats", "Hosts": ["127.0.0.1:4222"]}]})
    assert [e["Service"] for e in cfg.notify] == ["sqlite"]
    assert [e["Service"] for e in cfg.consume] == ["nats"]
    assert cfg.notify_where == ["Notify[1]"] and cfg.consume_where == ["Consume[1]"]
    notify, consume = cfg.skipped
    assert notify == ("Notify[0]: no sink is installed for Service 'cassandar' (did you mean "
                      "'cassandra'?); known: cassandra, kafka, nats, sqlite; entry skipped")
    assert consume == ("Consume[0]: no consumer exists for Service 'http'; known: nats; "
                       "entry skipped")
    assert cfg.ignored == []               # a skipped entry's keys are not reported


def test_an_unknown_critical_service_is_fatal():
    with pytest.raises(ConfigError) as err:
        config_from_dict({"Notify": [{"Service": "sqlite", "Path": "t.db"},
                                     {"Service": "Cassandra", "Critical": True}]})
    assert ("Notify[1]: no sink is installed for Service 'Cassandra' (did you mean "
            "'cassandra'?)") in str(err.value)
    assert "Critical, so the collector cannot start without it" in str(err.value)
    with pytest.raises(ConfigError, match=r"Consume\[0\]: no consumer exists for Service 'http'"):
        config_from_dict({"Consume": [{"Service": "http", "Critical": True}]})


def test_a_notify_list_left_empty_by_skipping_is_fatal():
    with pytest.raises(ConfigError, match="every entry was skipped"):
        config_from_dict({"Notify": [{"Service": "druid"}, {"Note": "no Service at all"}]})


def test_go_entry_keys_not_read_are_listed_and_others_warned():
    cfg = config_from_dict({
        "Notify": [{"Service": "cassandra", "Contxt": "ks", "Retry": False, "Format": "json",
                    "Filter": [{"Alias": "log", "Id": "log", "Queries": []}],
                    "MessageLimit": 10}],
        "Consume": [{"Service": "nats", "Hosts": ["127.0.0.1:4222"], "Format": "json",
                     "MessageLimit": 65536, "ByteLimit": 1 << 26, "Context": "x",
                     "Filter": [{"Alias": "log", "Type": "chan", "Id": "tic.log.>"},
                                {"Alias": "count", "Type": "chan", "Id": "tic.count.>",
                                 "Qeue": "q"}]}]})
    assert cfg.ignored == ["Notify[0].Filter", "Notify[0].Format", "Notify[0].MessageLimit",
                           "Notify[0].Retry", "Consume[0].Context", "Consume[0].Filter[].Type"]
    assert cfg.warnings == [
        "Notify[0].Contxt: not a key of cassandra Notify entries (did you mean 'Context'?), "
        "ignored",
        "Consume[0].Filter[].Qeue: not a key of nats Consume Filter items, ignored"]


def test_unknown_top_level_keys_suggest_the_closest():
    cfg = config_from_dict({"Debgu": True, "IgnoreProxyOptions": False})
    assert cfg.warnings == ["Debgu: an unknown key (did you mean 'Debug'?), ignored"]
    assert cfg.ignored == ["IgnoreProxyOptions"]


def test_sink_errors_name_the_entry_by_its_place_in_the_file():
    from engine.store.sinks.registry import SinkEntryError, build_sinks
    cfg = config_from_dict({"Notify": [{"Service": "http"},
                                       {"Service": "cassandra", "Context": "no-dash"}]})
    with pytest.raises(SinkEntryError, match=r"^Notify\[1\] \(cassandra\): cassandra Context"):
        build_sinks(cfg)


def test_an_installed_plugin_sink_is_a_known_service(tmp_path, monkeypatch):
    # A real distribution on sys.path registering a sink under tracker.sinks.
    dist = tmp_path / "tracker_druid_sink-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tracker-druid-sink\n"
                                   "Version: 0.1\n")
    (dist / "entry_points.txt").write_text("[tracker.sinks]\ndruid = druid_sink:DruidSink\n")
    (tmp_path / "druid_sink.py").write_text(
        "from engine.store.sinks.base import Sink\n\n\nclass DruidSink(Sink):\n"
        "    service = 'druid'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = config_from_dict({"Notify": [{"Service": "druid", "Brokers": ["b:9092"]},
                                       {"Service": "druud", "Brokers": ["b:9092"]}]})
    assert cfg.notify == [{"Service": "druid", "Brokers": ["b:9092"]}]
    assert cfg.warnings == [] and cfg.ignored == []   # its keys are the plug-in's business
    assert cfg.skipped == ["Notify[1]: no sink is installed for Service 'druud' (did you mean "
                           "'druid'?); known: cassandra, druid, kafka, nats, sqlite; "
                           "entry skipped"]



def test_privacy_keys_and_their_errors():
    cfg = config_from_dict({"IPAnonymize": "hash", "DoNotTrack": "drop",
                            "ConsentCookie": "CookieConsent"})
    assert (cfg.ip_anonymize, cfg.do_not_track, cfg.consent_cookie) == \
        ("hash", "drop", "CookieConsent")
    defaults = config_from_dict({})
    assert (defaults.ip_anonymize, defaults.do_not_track, defaults.consent_cookie) == \
        ("off", "ignore", "")
    with pytest.raises(ConfigError) as err:
        config_from_dict({"IPAnonymize": "mask", "DoNotTrack": True,
                          "ConsentCookie": "consent; path=/"})
    text = str(err.value)
    assert "IPAnonymize: got 'mask', expected \"off\", \"truncate\"" in text
    assert "DoNotTrack: got True, expected a string" in text
    assert "ConsentCookie: got 'consent; path=/', expected a cookie name" in text
