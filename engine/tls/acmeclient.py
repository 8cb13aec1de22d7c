"""Getting a certificate from an ACME CA (RFC 8555) with HTTP-01 challenges.

Synchronous on purpose: it runs only in the ACME process (workers/acme.py),
never in a worker's event loop. One call to ``obtain`` registers (or finds)
the account, orders one certificate for every name in ``Domains``, publishes
the challenge answers in the cache directory for the workers' plain ports,
makes sure the node itself can fetch them before asking the CA to look, and
returns the full chain plus a fresh private key as one PEM bundle.
"""
import datetime
import http.client
import os
import time

import josepy as jose
from acme import challenges, client, crypto_util, errors, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from engine.tls import acmefiles
from engine.logs import log

USER_AGENT = "tracker-acme"
ORDER_TIMEOUT = 120          # seconds for validation and finalization
SELF_CHECK_TIMEOUT = 30      # seconds for our own plain port to serve an answer


class AcmeFailed(Exception):
    """The CA did not issue; the message says why (the caller retries later)."""


def _pem_private(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def account_key(cache_dir):
    """The account's key, created on first use and kept in the cache."""
    path = os.path.join(cache_dir, acmefiles.ACCOUNT_KEY)
    pem = acmefiles.read_file(path)
    if pem is None:
        pem = _pem_private(rsa.generate_private_key(public_exponent=65537, key_size=2048))
        acmefiles.write_private(path, pem)
    return jose.JWKRSA(key=serialization.load_pem_private_key(pem, password=None))


class AcmeClient:
    def __init__(self, config):
        self.config = config
        self.cache = config.acme_cache_directory
        self.key = account_key(self.cache)
        self.acme = None

    # ---- the story ---------------------------------------------------------
    def obtain(self):
        """A new certificate for ``Domains``: (PEM bundle of chain + key)."""
        try:
            self.connect()
            cert_key = ec.generate_private_key(ec.SECP256R1())
            names = sorted({d.lower().rstrip(".") for d in self.config.domains})
            csr = crypto_util.make_csr(_pem_private(cert_key), names)
            order = self.acme.new_order(csr)
            tokens = [self.answer(authz) for authz in order.authorizations
                      if authz.body.status != messages.STATUS_VALID]
            try:
                deadline = datetime.datetime.now() + datetime.timedelta(seconds=ORDER_TIMEOUT)
                order = self.acme.poll_and_finalize(order, deadline)
            finally:
                for token in tokens:
                    self.withdraw(token)
        except AcmeFailed:
            self.acme = None
            raise
        except Exception as exc:    # the CA, the network, requests or josepy
            self.acme = None        # start over with a fresh directory and nonce
            raise AcmeFailed(describe(exc)) from None
        return order.fullchain_pem.encode() + _pem_private(cert_key)

    def connect(self):
        """Directory, then the account (registered once, found again by its key)."""
        if self.acme is not None:
            return
        net = client.ClientNetwork(self.key, user_agent=USER_AGENT,
                                   verify_ssl=self.config.acme_ca_cert or True)
        directory = client.ClientV2.get_directory(self.config.acme_directory, net)
        acme = client.ClientV2(directory, net)
        contact = {"email": self.config.acme_email} if self.config.acme_email else {}
        try:
            acme.new_account(messages.NewRegistration.from_data(
                terms_of_service_agreed=True, **contact))
            log.info("ACME account registered", directory=self.config.acme_directory)
        except errors.ConflictError as exc:     # this key has an account already
            net.account = messages.RegistrationResource(uri=exc.location,
                                                        body=messages.Registration())
        self.acme = acme

    # ---- HTTP-01 -----------------------------------------------------------
    def answer(self, authz):
        """Publish the answer to one name's HTTP-01 challenge, check that our
        own plain port serves it, then tell the CA to validate."""
        challb = next((c for c in authz.body.challenges
                       if isinstance(c.chall, challenges.HTTP01)), None)
        name = authz.body.identifier.value
        if challb is None:
            raise AcmeFailed(f"the CA offers no http-01 challenge for {name}")
        response, validation = challb.response_and_validation(self.key)
        token = challb.chall.encode("token")
        path = os.path.join(self.cache, acmefiles.CHALLENGES, token)
        acmefiles.write_private(path, validation.encode())
        self.self_check(token, validation.encode())
        self.acme.answer_challenge(challb, response)
        log.info("ACME challenge answered", name=name)
        return token

    def withdraw(self, token):
        try:
            os.unlink(os.path.join(self.cache, acmefiles.CHALLENGES, token))
        except FileNotFoundError:
            pass

    def self_check(self, token, expected):
        """Wait until the node's plain port serves the answer: on a first start
        the workers may still be booting, and a CA counts failed validations."""
        host, port = self.config.listen
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        deadline = time.monotonic() + SELF_CHECK_TIMEOUT
        while True:
            got = fetch(host, port, "/.well-known/acme-challenge/" + token)
            if got == expected:
                return
            if time.monotonic() > deadline:
                raise AcmeFailed(f"the plain port {host}:{port} does not serve the "
                                 "challenge answer (is ProxyPort reachable?)")
            time.sleep(0.2)


def fetch(host, port, path):
    """The body of a 200 answer, or None."""
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": "acme-self-check"})
        resp = conn.getresponse()
        body = resp.read()
        return body if resp.status == 200 else None
    except OSError:
        return None
    finally:
        conn.close()


def describe(exc):
    """A one-line reason for an ACME failure (the CA's own text when it sent one)."""
    if isinstance(exc, messages.Error):
        return f"{exc.typ}: {exc.detail}"
    if isinstance(exc, errors.ValidationError):
        reasons = [f"{a.body.identifier.value}: {c.error.detail}" for a in exc.failed_authzrs
                   for c in a.body.challenges if c.error is not None]
        return "validation failed: " + "; ".join(reasons)
    return f"{type(exc).__name__}: {exc}"
