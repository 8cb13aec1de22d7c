"""The reverse proxy: every request that is not a tracker route, when
``ProxyUrl`` is set (docs/proxy.md).

``ReverseProxy`` is one worker's proxy: the upstream pool and the settings
each ``ProxyExchange`` needs. Exchanges with a deadline are kept in
``streams`` and checked by the worker's once-a-second sweep.
"""
from engine.proxy.exchange import ProxyExchange
from engine.proxy.upstream import UpstreamPool, UpstreamURL


class ReverseProxy:
    def __init__(self, config, registry, stats, client_ip):
        self.url = UpstreamURL(config.proxy_url)
        self.pool = UpstreamPool(self.url, config)
        self.registry = registry
        self.date = registry.date
        self.stats = stats
        self.client_ip = client_ip
        self.connect_timeout = config.proxy_connect_timeout
        self.read_timeout = config.proxy_read_timeout
        self.tunnel_timeout = config.proxy_tunnel_timeout
        self.hsts = config.proxy_hsts.encode("latin-1")
        self.streams = registry.streams
        stats.upstream = lambda: (self.pool.open, len(self.pool.idle))

    def clock(self):
        return self.registry.clock

    def peer_trusted(self, peer):
        return bool(self.client_ip.networks) and self.client_ip.trusted(peer)

    def exchange(self, conn, req, keep, cookie, upgrade):
        return ProxyExchange(self, conn, req, keep, cookie, upgrade)
