"""TLS test helpers: a small CA and the certificates it signs (for the
collector's local TLS and for pebble's own listener), and an HTTPS client
for a collector started by conftest's ``Collector``."""
import datetime
import http.client
import ipaddress
import socket
import ssl
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(common):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _pem_key(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class MiniCA:
    def __init__(self, name="tracker test CA"):
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (x509.CertificateBuilder()
                     .subject_name(_name(name)).issuer_name(_name(name))
                     .public_key(self.key.public_key())
                     .serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(minutes=5))
                     .not_valid_after(now + datetime.timedelta(days=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                     .sign(self.key, hashes.SHA256()))

    @property
    def pem(self):
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, names=("localhost",), ips=("127.0.0.1", "::1")):
        """(certificate PEM, key PEM) for a server with these names."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        sans = [x509.DNSName(n) for n in names] + \
               [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        cert = (x509.CertificateBuilder()
                .subject_name(_name(names[0])).issuer_name(self.cert.subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                               critical=False)
                .sign(self.key, hashes.SHA256()))
        return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)

    @staticmethod
    def serial_of(path):
        with open(path, "rb") as fh:
            return x509.load_pem_x509_certificate(fh.read()).serial_number

    def write(self, directory, stem, names=("localhost",)):
        """Write ``<stem>.pem`` / ``<stem>.key`` (and ``ca.pem``); return their paths."""
        cert, key = self.issue(names)
        paths = {"cert": directory / f"{stem}.pem", "key": directory / f"{stem}.key",
                 "ca": directory / "ca.pem"}
        paths["cert"].write_bytes(cert)
        paths["key"].write_bytes(key)
        paths["ca"].write_bytes(self.pem)
        return {k: str(v) for k, v in paths.items()}


def client_context(cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def https(c, cafile=None, host="localhost"):
    """A connection to the collector's TLS port, trusting ``cafile`` (default:
    the CA the test gave the collector, ``c.cafile``)."""
    return http.client.HTTPSConnection(host, c.tls_port, timeout=10,
                                       context=client_context(cafile or c.cafile))


def wait_https(c, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if c.proc.poll() is not None:
            raise AssertionError(f"collector exited {c.proc.returncode}:\n{c.logs()}")
        if '"msg":"serving"' in c.logs():
            conn = https(c)
            try:
                conn.request("GET", "/ping")
                if conn.getresponse().status == 200:
                    return
            except (OSError, ssl.SSLError):
                pass
            finally:
                conn.close()
        time.sleep(0.1)
    raise AssertionError("no HTTPS:\n" + c.logs())


def served_serial(c, cafile):
    with socket.create_connection(("127.0.0.1", c.tls_port), timeout=10) as raw:
        with client_context(cafile).wrap_socket(raw, server_hostname="localhost") as tls:
            der = tls.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).serial_number
