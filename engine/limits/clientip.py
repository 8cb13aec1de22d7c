"""Which address a request comes from.

The socket peer, unless the peer is a trusted proxy (``TrustedProxies``,
CIDRs): then the right-most address in ``X-Forwarded-For`` (or RFC 7239
``Forwarded: for=``) that is not itself a trusted proxy. Walking from the
right matters: everything left of the last trusted hop was written by the
client and proves nothing, so a client cannot choose its address by sending
the header itself.
"""
import ipaddress


class ClientIP:
    def __init__(self, trusted_cidrs):
        self.networks = tuple(ipaddress.ip_network(c, strict=False) for c in trusted_cidrs)
        self._peer_cache = {}

    @property
    def enabled(self):
        return bool(self.networks)

    def trusted(self, address):
        """Is ``address`` (text) one of our proxies? Cached per peer text."""
        known = self._peer_cache.get(address)
        if known is None:
            known = self._is_trusted(address)
            if len(self._peer_cache) > 4096:
                self._peer_cache.clear()
            self._peer_cache[address] = known
        return known

    def _is_trusted(self, address):
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.networks)

    def resolve(self, peer, headers):
        """The client address for a request from ``peer`` with ``headers``
        (lower-cased bytes names → bytes values)."""
        if not self.networks or not self.trusted(peer):
            return peer
        forwarded = headers.get(b"x-forwarded-for")
        hops = _xff_hops(forwarded) if forwarded else _forwarded_hops(headers.get(b"forwarded"))
        client = peer
        for hop in reversed(hops):
            if hop is None:        # unparseable: written by the client, stop here
                break
            client = hop
            if not self.trusted(hop):
                break
        return client


def _valid(text):
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _xff_hops(value):
    """Addresses, left to right; None for an entry that is not an address."""
    return [_valid(part.strip()) for part in value.decode("latin-1").split(",")]


def _forwarded_hops(value):
    if not value:
        return []
    hops = []
    for element in value.decode("latin-1").split(","):
        for pair in element.split(";"):
            key, _, val = pair.strip().partition("=")
            if key.strip().lower() != "for":
                continue
            val = val.strip().strip('"')
            if val.startswith("["):               # [v6]:port
                val = val[1:].split("]", 1)[0]
            elif val.count(":") == 1:             # v4:port
                val = val.split(":", 1)[0]
            hops.append(_valid(val))
    return hops
