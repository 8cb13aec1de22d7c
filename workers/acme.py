"""The ACME process: gets the node's certificate and renews it in time.

The supervisor forks one of these when ``TLS`` is ``"acme"``. It reports
ready as soon as the cache directory and the account key are usable (the
HTTP workers are already answering challenges on the plain port by then),
then loops: read the cached certificate; if there is none, it does not cover
``Domains``, or ``AcmeRenewFraction`` of its lifetime has passed, get a new
one and write it to the cache (atomically); sleep until the next renewal.

Workers notice the new file (they watch its mtime) and load it into their
live TLS context, so nothing restarts. A failed attempt is logged with the
CA's reason and retried with backoff; the node keeps serving the certificate
it has.
"""
import os
import signal
import time

from engine.tls import acmefiles
from engine.tls.acmeclient import AcmeClient, AcmeFailed
from engine.logs import configure, log
from engine.tls.context import CertificateError, check_pem
from workers import EXIT_BOOT, EXIT_OK
from workers.base import die_with_parent, report_ready, set_title
RETRY_FIRST = 30.0           # seconds after a failed attempt, doubling…
RETRY_MAX = 3600.0           # …up to an hour
CHECK_MAX = 3600.0           # re-read the cache at least hourly


class Stop(Exception):
    """SIGTERM: leave whatever the process was doing (challenge files are
    withdrawn on the way out; the certificate file is only ever renamed in)."""


def _stop(signum, frame):
    raise Stop()


class AcmeWorker:
    def __init__(self, config):
        self.config = config
        self.path = acmefiles.certificate_path(config.acme_cache_directory)
        self.client = AcmeClient(config)
        self.retry = RETRY_FIRST

    def run(self):
        while True:
            wait = self.step()
            log.debug("next certificate check", seconds=round(wait, 1))
            time.sleep(wait)

    def step(self):
        """One look at the certificate; returns the seconds until the next."""
        due = self.seconds_until_renewal()
        if due > 0:
            return min(due, CHECK_MAX)
        try:
            self.renew()
        except AcmeFailed as exc:
            wait, self.retry = self.retry, min(self.retry * 2, RETRY_MAX)
            log.error("certificate not obtained; retrying", reason=str(exc),
                      seconds=wait, directory=self.config.acme_directory)
            return wait
        self.retry = RETRY_FIRST
        return min(max(self.seconds_until_renewal(), 1.0), CHECK_MAX)

    def seconds_until_renewal(self):
        pem = acmefiles.read_file(self.path)
        cert = acmefiles.leaf_certificate(pem) if pem else None
        if cert is None:
            return 0.0
        when = acmefiles.renewal_time(cert, self.config.domains,
                                      self.config.acme_renew_fraction)
        return acmefiles.seconds_until(when)

    def renew(self):
        started = time.monotonic()
        pem = self.client.obtain()
        try:
            check_pem(pem)          # never hand the workers a bundle they cannot load
        except CertificateError as exc:
            raise AcmeFailed(f"the CA's certificate does not load: {exc}") from None
        acmefiles.write_private(self.path, pem)
        cert = acmefiles.leaf_certificate(pem)
        log.info("certificate obtained", names=sorted(acmefiles.names_of(cert)),
                 serial="%x" % cert.serial_number,
                 not_after=cert.not_valid_after_utc.isoformat(),
                 seconds=round(time.monotonic() - started, 2))


def run(config, index, ready_fd):
    """Entry point in the forked child; returns the process exit code."""
    configure(config.effective_log_level, "acme")
    die_with_parent()
    set_title(f"acme-{index}")
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        acmefiles.prepare_cache(config.acme_cache_directory)
        worker = AcmeWorker(config)
    except (OSError, ValueError) as exc:
        log.error("ACME process cannot boot", reason=f"AcmeCacheDirectory "
                  f"{config.acme_cache_directory}: {exc}")
        return EXIT_BOOT
    report_ready(ready_fd)
    os.close(ready_fd)
    try:
        worker.run()
    except Stop:
        log.info("ACME process stopped")
    return EXIT_OK
