"""Certificate loading and the renewal schedule, on real files."""
import datetime
import ssl
import sys
from pathlib import Path

import pytest
from cryptography import x509

from engine.tls import acmefiles
from engine.tls.context import CertificateError, LiveCertificate, check_pem, read_pair, server_context

sys.path.insert(0, str(Path(__file__).parent.parent / "integration"))
from tlshelpers import MiniCA  # noqa: E402


def test_a_mismatched_pair_is_refused_and_the_live_one_stays(tmp_path):
    ca = MiniCA()
    a, b = ca.write(tmp_path, "a"), ca.write(tmp_path, "b")
    live = LiveCertificate(server_context(), a["cert"], a["key"])
    assert live.refresh() and live.loaded
    assert not live.refresh()                          # unchanged files: nothing to do
    first, second = ca.serial_of(a["cert"]), ca.serial_of(b["cert"])
    # Certificate replaced before its key: loading this half-done pair into
    # the live context would leave it a certificate without a key (OpenSSL
    # drops the old key when the new certificate does not match it).
    Path(a["cert"]).write_bytes(Path(b["cert"]).read_bytes())
    with pytest.raises(CertificateError, match="does not belong to the certificate"):
        live.refresh()
    assert served_by(live.ctx, a["ca"]) == first       # still the first pair, usable
    Path(a["key"]).write_bytes(Path(b["key"]).read_bytes())
    assert live.refresh()                              # the completed pair loads
    assert served_by(live.ctx, a["ca"]) == second


def served_by(server_ctx, cafile):
    """Handshake in memory with ``server_ctx``; the serial it presented."""
    client_ctx = ssl.create_default_context(cafile=cafile)
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for end in (client, server):
            try:
                end.do_handshake()
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    der = client.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).serial_number


def test_unreadable_and_garbage_files(tmp_path):
    with pytest.raises(CertificateError, match="cannot read .*missing.pem"):
        read_pair(str(tmp_path / "missing.pem"), None)
    with pytest.raises(CertificateError, match="not a PEM certificate"):
        check_pem(b"hello")


def test_server_context_defaults():
    ctx = server_context()
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_CIPHER_SERVER_PREFERENCE


def _cert(tmp_path, names, days=90):
    cert_pem, _ = MiniCA().issue(names)
    return acmefiles.leaf_certificate(cert_pem)


def test_renewal_time_is_a_fraction_of_the_lifetime(tmp_path):
    cert = _cert(tmp_path, ("example.com", "www.example.com"))
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    assert acmefiles.renewal_time(cert, ["example.com"], 0.5) == start + (end - start) / 2
    assert acmefiles.renewal_time(cert, ["WWW.example.com."], 0.25) == \
        start + (end - start) / 4
    # A name the certificate lacks (Domains grew): renew now.
    assert acmefiles.renewal_time(cert, ["example.com", "new.example.com"], 0.5) == start


def test_cache_is_private_and_writes_are_atomic(tmp_path):
    cache = tmp_path / "acme"
    cache.mkdir(mode=0o755)
    acmefiles.prepare_cache(str(cache))
    assert (cache.stat().st_mode & 0o777) == 0o700
    assert ((cache / "challenges").stat().st_mode & 0o777) == 0o700
    target = cache / "certificate.pem"
    acmefiles.write_private(str(target), b"one")
    acmefiles.write_private(str(target), b"two")
    assert target.read_bytes() == b"two" and (target.stat().st_mode & 0o777) == 0o600
    assert sorted(p.name for p in cache.iterdir()) == ["certificate.pem", "challenges"]
    assert acmefiles.read_file(str(cache / "none")) is None
    assert acmefiles.seconds_until(
        datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=100)) > 99
