"""The ACME cache directory (``AcmeCacheDirectory``) and when to renew.

Layout (directory mode 0700, files 0600)::

    account.key          the ACME account's private key (PEM); created once
    certificate.pem      the served full chain, then its private key (PEM);
                         replaced atomically by rename, so a worker never
                         reads half a file or a mismatched pair
    challenges/<token>   the key authorization of a pending HTTP-01
                         challenge, answered by every worker's plain port

Every process shares it: the supervisor creates it, the ACME process
writes it, the HTTP workers read the certificate and the challenges.
"""
import datetime
import os
import tempfile

from cryptography import x509
from cryptography.x509.oid import ExtensionOID

ACCOUNT_KEY = "account.key"
CERTIFICATE = "certificate.pem"
CHALLENGES = "challenges"


def certificate_path(cache_dir):
    return os.path.join(cache_dir, CERTIFICATE)


def prepare_cache(cache_dir):
    """Create the cache (and its challenge folder) private to this user.
    Raises OSError with the failing path."""
    for path in (cache_dir, os.path.join(cache_dir, CHALLENGES)):
        os.makedirs(path, mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)     # also when it existed with looser bits


def write_private(path, data):
    """Write ``data`` to ``path`` atomically with mode 0600."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def read_file(path):
    """The file's bytes, or None when it does not exist."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def leaf_certificate(pem):
    """The first certificate of a PEM bundle, or None when there is none."""
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        return None


def names_of(cert):
    try:
        ext = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    except x509.ExtensionNotFound:
        return set()
    return {name.lower() for name in ext.value.get_values_for_type(x509.DNSName)}


def renewal_time(cert, domains, fraction):
    """When ``cert`` should be replaced: once ``fraction`` of its lifetime has
    passed (2/3 of a 90-day certificate = 30 days before it expires), or now
    when it does not cover every name in ``domains``."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    wanted = {d.lower().rstrip(".") for d in domains}
    if not wanted <= names_of(cert):
        return start
    return start + (end - start) * fraction


def seconds_until(when, now=None):
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return (when - now).total_seconds()
