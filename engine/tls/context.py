"""The server side of TLS: one SSLContext per worker, reloaded in place.

A worker builds its context once (modern defaults, no certificate yet) and
hands it to the TLS listener. When the certificate files change on disk —
an operator replaced ``TLSCert``/``TLSKey``, or the ACME process renewed —
``LiveCertificate.refresh`` loads them into that same context: handshakes
after the load present the new certificate, connections already open keep
the session they negotiated, so nothing is dropped and no worker restarts.

Loading is careful because OpenSSL is not: ``load_cert_chain`` on a context
installs the certificate before it checks the key, so a mismatched pair
would leave the live context with a certificate and no usable key. The files
are therefore read once into memory, proven on a scratch context, and only
then loaded into the live one from the very same bytes.
"""
import os
import ssl
import tempfile

SCRATCH_DIR = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None


class CertificateError(Exception):
    """The certificate or key cannot be used (missing, unreadable, mismatched)."""


def server_context():
    """A TLS server context with the defaults an edge node wants today."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    # Our cipher order (strong AEAD first) wins over a client's preference;
    # renegotiation is a DoS lever no HTTP/1.1 client here needs.
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_COMPRESSION
    ctx.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    return ctx


def read_pair(cert_path, key_path):
    """The PEM bytes of a certificate chain and its key (the key may sit in
    the certificate file, then ``key_path`` is None or the same path)."""
    try:
        with open(cert_path, "rb") as fh:
            cert = fh.read()
        key = b""
        if key_path and key_path != cert_path:
            with open(key_path, "rb") as fh:
                key = fh.read()
    except OSError as exc:
        raise CertificateError(f"cannot read {exc.filename}: {exc.strerror}") from None
    return cert + b"\n" + key


def load_pem(ctx, pem):
    """Load a PEM bundle (chain + key) into ``ctx``. The bytes pass through a
    private (0600) temporary file because ``ssl`` only loads from paths; in
    memory-backed /dev/shm when there is one, so the key never meets a disk."""
    fd, path = tempfile.mkstemp(prefix="tracker-tls-", suffix=".pem", dir=SCRATCH_DIR)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        ctx.load_cert_chain(path)
    except ssl.SSLError as exc:
        raise CertificateError(_explain(exc)) from None
    finally:
        os.unlink(path)


def _explain(exc):
    text = f"{getattr(exc, 'reason', None) or ''} {exc}".upper()
    if "KEY_VALUES_MISMATCH" in text:
        return "the private key does not belong to the certificate"
    if "NO_START_LINE" in text or "PEM LIB" in text:
        return "not a PEM certificate and private key"
    return str(exc)


def check_pem(pem):
    """Raise CertificateError unless ``pem`` loads into a fresh context."""
    load_pem(server_context(), pem)


class LiveCertificate:
    """The certificate files a worker serves, watched by size and mtime."""

    def __init__(self, ctx, cert_path, key_path=None):
        self.ctx = ctx
        self.cert_path = cert_path
        self.key_path = key_path
        self.seen = None          # the files' signature at the last attempt
        self.loaded = False

    def signature(self):
        sig = []
        for path in (self.cert_path, self.key_path):
            if path:
                try:
                    st = os.stat(path)
                except OSError:
                    return None         # not there (yet): nothing to load
                sig.append((st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(sig)

    def refresh(self):
        """Load the files when they changed since the last attempt.

        Returns True when a (new) certificate now serves. Raises
        CertificateError when the changed files are unusable; the context
        keeps serving what it had, and the next change is tried again.
        """
        sig = self.signature()
        if sig is None or sig == self.seen:
            return False
        self.seen = sig
        pem = read_pair(self.cert_path, self.key_path)
        check_pem(pem)
        load_pem(self.ctx, pem)
        self.loaded = True
        return True
