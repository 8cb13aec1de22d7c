"""Loading and validating ``config.json``.

The Go collector's keys load unchanged and mean the same; its keys this
collector does not use are listed in ``Config.ignored``, unknown keys are
warnings, never fatal. ``Notify`` / ``Consume`` entries of a service that does
not exist here are skipped and listed in ``Config.skipped`` unless Critical
(engine/entries.py). A known key with a wrong type or value fails with the key,
the value and what was expected; every problem in a file is reported at once
so an operator fixes them in one pass.

Relative paths are resolved against the config file's directory.
"""
import os
from dataclasses import dataclass, field

import orjson

from engine.entries import did_you_mean, drop_unknown_services, note_unread_keys
from engine.errors import ConfigError
from engine.limits.policy import parse_rate_limit, parse_trusted_proxies
from engine.urlfilter import url_filter

# Keys Go versions of the collector knew that this one does not use: loaded,
# listed in Config.ignored.
GO_KEYS_UNUSED = frozenset({
    "ProxyForceJson", "ProxyExceptIPs", "AllowOrigin",
    "PrefixPrivateHash", "AccountHashMixer", "S3Bucket", "S3Prefix",
    "PostgresUrl", "FallbackDomain", "ProxyRoot", "StaticHost",
    "ProxyPortRedirect", "IgnoreProxyOptions", "ProxyUrlFilter", "UrlFilter",
    "UrlFilterMatchGroup", "IgnoreQueryParamsKey", "CFlagsMarketing", "CFlagsIgnore",
})

NOTIFY_KEYS = {
    "Service": str, "Hosts": list, "Context": str, "Timeout": int,
    "Connections": int, "CACert": str, "Cert": str, "Key": str,
    "Secure": bool, "Critical": bool, "Filter": list, "Format": str,
    "MessageLimit": int, "BytesLimit": int, "ByteLimit": int, "Path": str,
    "Username": str, "Password": str, "Replication": (str, dict),
    "JetStream": bool, "Stream": str, "Replicas": int,
    "Concurrency": int, "RowBatch": int, "FirstWrite": str, "Consistency": str,
    "LocalDC": str,
}
NOTIFY_PATH_KEYS = ("CACert", "Cert", "Key", "Path")


def _pos(v):
    return v > 0


def _nonneg(v):
    return v >= 0


def _cookie_name(v):
    return all(c.isascii() and (c.isalnum() or c in "-_.") for c in v)


# key: (attribute, accepted types, default, check, what is expected)
KEYS = {
    "Domains": ("domains", list, [], None, "a list of host names"),
    "ApiVersion": ("api_version", int, 1, _pos, "a positive integer (1 means /v1/)"),
    "SchemaVersion": ("schema_version", int, 1, _pos, "a positive integer"),
    "StaticDirectory": ("static_directory", str, "", None, "a directory path"),
    "ProxyUrl": ("proxy_url", str, "", None, "an http(s) URL or empty"),
    "UseLocalTLS": ("use_local_tls", bool, False, None, "true or false"),
    "TLSCert": ("tls_cert", str, "", None, "a file path"),
    "TLSKey": ("tls_key", str, "", None, "a file path"),
    "ProxyPort": ("proxy_port", (str, int), "127.0.0.1:8080", None, '":PORT" or "HOST:PORT"'),
    "ProxyPortTLS": ("proxy_port_tls", (str, int), ":443", None, '":PORT" or "HOST:PORT"'),
    "ProxyDailyLimit": ("proxy_daily_limit", int, 0, _nonneg, "requests per IP per day, 0 = off"),
    "ProxyDailyLimitChecker": ("proxy_daily_limit_checker", str, "", None, '"sqlite", "cassandra" or empty'),
    "MaximumConnections": ("maximum_connections", int, 0, _nonneg, "a connection count, 0 = no cap"),
    "ReadTimeoutSeconds": ("read_timeout", (int, float), 20, _pos, "seconds > 0"),
    "ReadHeaderTimeoutSeconds": ("read_header_timeout", (int, float), 20, _pos, "seconds > 0"),
    "WriteTimeoutSeconds": ("write_timeout", (int, float), 20, _pos, "seconds > 0"),
    "IdleTimeoutSeconds": ("idle_timeout", (int, float), 20, _pos, "seconds > 0"),
    "MaxHeaderBytes": ("max_header_bytes", int, 65536, _pos, "bytes > 0"),
    "DefaultRedirect": ("default_redirect", str, "/", None, "a URL"),
    "Debug": ("debug", bool, False, None, "true or false"),
    "UrlPrefixFilter": ("url_prefix_filter", str, "", None,
                        "a regular expression (engine/urlfilter.py), empty = off"),
    "Notify": ("notify", list, None, None, "a list of sink objects"),
    "Consume": ("consume", list, [], None, "a list of consumer objects"),
    # New keys (README documents them).
    "TLS": ("tls", str, None, lambda v: v in ("off", "local", "acme"), '"off", "local" or "acme"'),
    "Workers": ("workers", int, 0, _nonneg, "a process count, 0 = one per CPU"),
    "StoreWorkers": ("store_workers", int, 1, _pos,
                     "a process count >= 1 (SQLite always has one writer)"),
    "WorkerTimeoutSeconds": ("worker_timeout", (int, float), 30, _pos,
                             "seconds > 0 a worker may go without a heartbeat"),
    "RedirectHosts": ("redirect_hosts", list, None, None, "a list of host names"),
    "AdminListen": ("admin_listen", str, "", None,
                    '"HOST:PORT" for /metrics, /status, /ready and /ping, or empty'),
    "DashboardToken": ("dashboard_token", str, "", lambda v: v == "" or len(v) >= 16,
                       "a secret of 16+ characters for /dash/ (Bearer, or Basic with any "
                       "user), empty = no dashboard"),
    "DashboardCacheSeconds": ("dashboard_cache_seconds", (int, float), 60, _nonneg,
                              "seconds >= 0 a built /dash/ page is served again (0 = never)"),
    "RateLimit": ("rate_limit", dict, {}, None, "an object"),
    "TrustedProxies": ("trusted_proxies", list, [], None, "a list of CIDRs"),
    "Durability": ("durability", str, "spool", lambda v: v in ("memory", "spool"),
                   '"spool" or "memory"'),
    "SpoolDirectory": ("spool_directory", str, "spool", None, "a directory path"),
    "SpoolMaxBytes": ("spool_max_bytes", int, 256 << 20, lambda v: v >= 1 << 20,
                      "bytes >= 1048576 (per worker)"),
    "CommitIntervalMs": ("commit_interval_ms", (int, float), 1, _nonneg,
                         "milliseconds >= 0 a spool group stays open (0 = none)"),
    "BatchMaxEvents": ("batch_max_events", int, 1000, _pos, "events > 0"),
    "BatchMaxAgeMs": ("batch_max_age_ms", int, 250, _pos, "milliseconds > 0"),
    "QueueMaxEvents": ("queue_max_events", int, 200000, _pos, "events > 0"),
    "DrainTimeoutSeconds": ("drain_timeout", (int, float), 10, _pos, "seconds > 0"),
    "MaxBodyBytes": ("max_body_bytes", int, 1048576, _pos, "bytes > 0"),
    "MaxBatchEvents": ("max_batch_events", int, 1000, _pos,
                       "events > 0 in one batch (JSON array body or WebSocket frame)"),
    # Privacy (engine/ingest/privacy.py, README "Privacy").
    "IPAnonymize": ("ip_anonymize", str, "off", lambda v: v in ("off", "truncate", "hash"),
                    '"off", "truncate" (IPv4 /24, IPv6 /48) or "hash" (keyed, daily key)'),
    "DoNotTrack": ("do_not_track", str, "ignore",
                   lambda v: v in ("ignore", "anonymize", "drop"),
                   '"ignore", "anonymize" or "drop" (requests with DNT: 1 or Sec-GPC: 1)'),
    "Bots": ("bots", str, "keep", lambda v: v in ("keep", "flag", "drop"),
             '"keep", "flag" (params.bot = "true") or "drop" (robots\' events stored nowhere)'),
    "ConsentCookie": ("consent_cookie", str, "", lambda v: _cookie_name(v),
                      "a cookie name (letters, digits, - _ .), or empty = no consent gate"),
    "EraseToken": ("erase_token", str, "", lambda v: v == "" or len(v) >= 16,
                   "a secret of at least 16 characters enabling POST /privacy/v1/erase, "
                   "or empty"),
    "RetentionDays": ("retention_days", int, 0, lambda v: v >= 0,
                      "days >= 0 events are kept (0 = for ever)"),
    "LogLevel": ("log_level", str, "info",
                 lambda v: v in ("debug", "info", "warning", "error"),
                 '"debug", "info", "warning" or "error"'),
    "AcmeDirectory": ("acme_directory", str,
                      "https://acme-v02.api.letsencrypt.org/directory", None, "a URL"),
    "AcmeCacheDirectory": ("acme_cache_directory", str, "acme", None, "a directory path"),
    "AcmeCACert": ("acme_ca_cert", str, "", None,
                   "a PEM file of CAs to trust for the ACME directory, or empty for the system's"),
    "AcmeEmail": ("acme_email", str, "", None, "a contact e-mail address or empty"),
    "AcmeRenewFraction": ("acme_renew_fraction", (int, float), 2 / 3,
                          lambda v: 0 < v < 1,
                          "a fraction of a certificate's lifetime between 0 and 1"),
    "ReuseportMigrate": ("reuseport_migrate", bool, True, None, "true or false"),
    "ServerMonthlyCost": ("server_monthly_cost", (int, float), 0,
                          lambda v: 0 <= v < 1e9, "US dollars per month this node costs, "
                          "0 = unknown (docs/metrics.md: the per-dollar rules)"),
    # Reverse proxy (docs/proxy.md) and static files (docs/static.md).
    "IgnoreInsecureTLS": ("ignore_insecure_tls", bool, False, None,
                          "true or false (true: do not verify an https ProxyUrl)"),
    "ProxyConnectTimeoutSeconds": ("proxy_connect_timeout", (int, float), 5, _pos, "seconds > 0"),
    "ProxyReadTimeoutSeconds": ("proxy_read_timeout", (int, float), 60, _pos, "seconds > 0"),
    "ProxyTunnelTimeoutSeconds": ("proxy_tunnel_timeout", (int, float), 3600, _pos,
                                  "seconds > 0 (idle WebSocket tunnels)"),
    "ProxyIdleConnections": ("proxy_idle_connections", int, 32, _nonneg,
                             "kept-alive upstream connections per worker"),
    "ProxyMaxConnections": ("proxy_max_connections", int, 512, _pos,
                            "upstream connections per worker"),
    "ProxyHSTS": ("proxy_hsts", str, "max-age=31536000", None,
                  "a Strict-Transport-Security value, empty = off"),
    "StaticCacheControl": ("static_cache_control", str, "public, max-age=3600", None,
                           "a Cache-Control value"),
    "StaticCacheBytes": ("static_cache_bytes", int, 32 << 20, _nonneg,
                         "bytes of small files cached per worker, 0 = off"),
    "StaticCacheFileBytes": ("static_cache_file_bytes", int, 256 << 10, _nonneg,
                             "largest file cached in memory, bytes"),
}
PATH_KEYS = ("StaticDirectory", "TLSCert", "TLSKey", "SpoolDirectory", "AcmeCacheDirectory",
             "AcmeCACert")


@dataclass
class Config:
    """The validated config. Attribute names are the snake_case of the keys."""
    path: str = ""
    base_dir: str = "."
    warnings: list = field(default_factory=list)
    skipped: list = field(default_factory=list)    # entries of unknown services, why
    ignored: list = field(default_factory=list)    # Go collector keys not used here
    notify_where: list = field(default_factory=list)   # "Notify[i]" in the file, per entry
    consume_where: list = field(default_factory=list)
    listen: tuple = ("127.0.0.1", 8080)
    listen_tls: tuple = ("0.0.0.0", 443)
    admin_address: tuple = None    # AdminListen as (host, port), or None
    url_filter: object = None      # compiled UrlPrefixFilter (engine/urlfilter.py)

    @property
    def api_prefix(self):
        return "v%d" % self.api_version

    @property
    def effective_log_level(self):
        return "debug" if self.debug else self.log_level


def parse_listen(value, key="ProxyPort"):
    """``":8080"``, ``"host:port"``, ``"[::1]:8080"`` or ``8080`` → (host, port)."""
    text = str(value).strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip("[]") or "0.0.0.0"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{key}: got {value!r}, expected \":PORT\" or \"HOST:PORT\" "
                          "with a port from 1 to 65535")
    return host, int(port)


def _type_name(types):
    types = types if isinstance(types, tuple) else (types,)
    names = {str: "a string", int: "an integer", float: "a number", bool: "true/false",
             list: "a list", dict: "an object"}
    return " or ".join(names[t] for t in types)


def _is_type(value, types):
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in types:
        return False  # JSON true is not an integer here
    return isinstance(value, types)


def _check_key(key, value, problems):
    attr, types, _default, check, expected = KEYS[key]
    if not _is_type(value, types):
        problems.append(f"{key}: got {value!r}, expected {_type_name(types)} ({expected})")
        return False
    if check is not None and not check(value):
        problems.append(f"{key}: got {value!r}, expected {expected}")
        return False
    return True


def _check_notify(where, entry, section, problems):
    if not isinstance(entry, dict):
        problems.append(f"{where}: got {entry!r}, expected an object")
        return
    service = entry.get("Service")
    for key, value in entry.items():
        types = NOTIFY_KEYS.get(key)
        if types is None:
            continue  # foreign keys in sink entries belong to plug-ins
        if not _is_type(value, types):
            problems.append(f"{where}.{key}: got {value!r}, expected {_type_name(types)}")
    if service == "sqlite" and section == "Notify" and not entry.get("Path"):
        problems.append(f"{where}.Path: missing, expected the SQLite file path")
    if service == "nats":
        from engine.nats.options import check_entry
        problems.extend(check_entry(where, entry, section))


def _resolve(base_dir, path):
    if not path:
        return path
    return os.path.normpath(os.path.join(base_dir, os.path.expanduser(path)))


def _derive_tls(cfg):
    if cfg.tls is not None:
        return cfg.tls
    if cfg.use_local_tls:
        return "local"
    return "acme" if cfg.domains else "off"


def _apply_defaults(cfg, raw, problems):
    if cfg.notify is None:
        cfg.notify = [{"Service": "sqlite", "Path": "tracker.db"}]
    sinks = drop_unknown_services(cfg, problems)
    for section in ("Notify", "Consume"):
        attr = section.lower()
        for where, entry in zip(getattr(cfg, attr + "_where"), getattr(cfg, attr)):
            _check_notify(where, entry, section, problems)
    note_unread_keys(cfg, sinks)
    if cfg.redirect_hosts is None:
        cfg.redirect_hosts = list(cfg.domains)
    try:
        cfg.url_filter = url_filter(cfg.url_prefix_filter)
    except ConfigError as exc:
        problems.append(str(exc))
    cfg.rate_limits = parse_rate_limit(cfg.rate_limit, problems)
    parse_trusted_proxies(cfg.trusted_proxies, problems)
    cfg.tls = _derive_tls(cfg)
    _check_tls(cfg, problems)
    if cfg.workers == 0:
        from engine.system.cpus import usable_cpus   # affinity and the container's CPU quota
        cfg.workers = usable_cpus()
    for key in ("ProxyPort", "ProxyPortTLS"):
        try:
            attr = "listen" if key == "ProxyPort" else "listen_tls"
            setattr(cfg, attr, parse_listen(getattr(cfg, KEYS[key][0]), key))
        except ConfigError as exc:
            problems.append(str(exc))
    _check_admin(cfg, problems)
    if cfg.proxy_url:
        from engine.proxy.upstream import UpstreamURL
        try:
            UpstreamURL(cfg.proxy_url)
        except ConfigError as exc:
            problems.append(str(exc))
    if cfg.tls != "off" and _same_address(cfg.listen, cfg.listen_tls):
        problems.append(f"ProxyPortTLS: got {cfg.proxy_port_tls!r}, the same address as "
                        f"ProxyPort {cfg.proxy_port!r}; with TLS the plain port redirects, "
                        "so the two need different ports")


def _check_admin(cfg, problems):
    if not cfg.admin_listen:
        return
    try:
        cfg.admin_address = parse_listen(cfg.admin_listen, "AdminListen")
    except ConfigError as exc:
        problems.append(str(exc))
        return
    public = [cfg.listen] + ([cfg.listen_tls] if cfg.tls != "off" else [])
    if any(_same_address(cfg.admin_address, a) for a in public):
        problems.append(f"AdminListen: got {cfg.admin_listen!r}, an address the public "
                        "listeners use; the admin listener needs its own port")


def _check_tls(cfg, problems):
    if cfg.tls == "local" and not (cfg.tls_cert and cfg.tls_key):
        problems.append('TLS: "local" needs TLSCert and TLSKey')
    if cfg.tls != "acme":
        return
    if not cfg.domains:
        problems.append('TLS: "acme" needs the host names to certify in Domains')
    for name in cfg.domains:
        if not isinstance(name, str) or not _is_host_name(name):
            problems.append(f"Domains: got {name!r}, expected a DNS host name "
                            "(ACME certifies names, not addresses or wildcards)")
    if not cfg.acme_directory.startswith(("https://", "http://")):
        problems.append(f"AcmeDirectory: got {cfg.acme_directory!r}, expected an http(s) URL")


def _is_host_name(name):
    labels = name.rstrip(".").split(".")
    return len(name) <= 253 and all(
        0 < len(label) <= 63 and label.replace("-", "").isalnum() and label.isascii()
        and not label.startswith("-") and not label.endswith("-") for label in labels
    ) and not labels[-1].isdigit()


def _same_address(a, b):
    """Two listen addresses that cannot both be bound (wildcards overlap all)."""
    wild = ("0.0.0.0", "::")
    return a[1] == b[1] and (a[0] == b[0] or a[0] in wild or b[0] in wild)


def _resolve_paths(cfg):
    for key in PATH_KEYS:
        attr = KEYS[key][0]
        setattr(cfg, attr, _resolve(cfg.base_dir, getattr(cfg, attr)))
    for entry in list(cfg.notify) + list(cfg.consume):
        if isinstance(entry, dict):
            for key in NOTIFY_PATH_KEYS:
                if isinstance(entry.get(key), str):
                    entry[key] = _resolve(cfg.base_dir, entry[key])


def config_from_dict(raw, path="", overrides=None):
    """Validate a decoded config object; raise ConfigError listing every problem."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{path or 'config'}: expected a JSON object at the top level")
    cfg = Config(path=path, base_dir=os.path.dirname(os.path.abspath(path)) if path else os.getcwd())
    problems = []
    for key, (attr, _t, default, _c, _e) in KEYS.items():
        value = raw.get(key, default)
        if key in raw and not _check_key(key, value, problems):
            value = default
        setattr(cfg, attr, value if not isinstance(value, (list, dict)) else _copy(value))
    for key in raw:
        if key in KEYS:
            continue
        if key in GO_KEYS_UNUSED:
            cfg.ignored.append(key)
        else:
            cfg.warnings.append(f"{key}: an unknown key{did_you_mean(key, KEYS)}, ignored")
    for key, value in (overrides or {}).items():
        setattr(cfg, key, value)
    _apply_defaults(cfg, raw, problems)
    if problems:
        raise ConfigError("invalid config " + (path or "") + ":\n  " + "\n  ".join(problems))
    _resolve_paths(cfg)
    if cfg.static_directory and not os.path.isdir(cfg.static_directory):
        cfg.warnings.append(f"StaticDirectory: {cfg.static_directory} is not a directory; "
                            "/pub/ answers 404 until it exists (then reload with SIGHUP)")
    return cfg


def _copy(value):
    return orjson.loads(orjson.dumps(value))


def load_config(path, overrides=None):
    """Read and validate ``path``. ``overrides`` maps attribute names to values
    from the command line (they win over the file)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"config {path} is not valid JSON: {exc}") from None
    return config_from_dict(raw, path, overrides)
