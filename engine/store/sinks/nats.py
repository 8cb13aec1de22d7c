"""NATS sink: every tracked event published as one JSON object on ``Context``.

Created in a store process after the fork (the client and its connection
belong to one event loop). The store stage calls ``write_batch`` from its
sink channel's task, so no request ever waits on NATS.

Two modes (docs/nats.md):

- core NATS (default): the batch is published and then flushed with a
  PING/PONG round trip; the batch counts as written once the server has
  answered the PONG, i.e. it has read every message of the batch. Past that
  socket delivery is at-most-once (a subscriber that is not connected misses
  the event).
- JetStream (``"JetStream": true``): every event is published with
  ``Nats-Msg-Id = eid`` and the batch counts as written only when the stream
  has acknowledged every message: at-least-once, and a retried batch is
  de-duplicated by the stream within its duplicate window (2 minutes by
  default).

Memory is bounded: when the connection is down ``write_batch`` raises at
once instead of letting the client buffer, so the batch stays in the spool
(its stage stops reading until the batch is written). The client's own
pending buffer only ever holds the batch being published.

Reconnects go across all ``Hosts`` for ever, trying each host once
immediately and then backing off (0.1 s doubling to 5 s, with jitter).
"""
import asyncio
import os
import random

import orjson

from engine.logs import log
from engine.nats.options import NOTIFY_KEYS, NatsOptions
from engine.store.sinks.base import Sink, SinkUnavailable

BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0
PENDING_BYTES = 8 * 1024 * 1024


def reconnect_choice(servers, _info):
    """nats-py ``reconnect_to_server_handler``: the least-tried server next;
    no delay while some host has not been tried since the disconnect, then
    exponential backoff with jitter."""
    best = min(servers, key=lambda s: s.reconnects)
    tries = best.reconnects
    if tries == 0:
        return best, 0.0
    delay = min(BACKOFF_FIRST * (2 ** (tries - 1)), BACKOFF_MAX)
    return best, delay * random.uniform(0.8, 1.2)


async def connect(opts, name, on_error=None, pending_size=PENDING_BYTES):
    """A connected ``nats.aio.client.Client`` for ``opts`` (NatsOptions).

    The first connection tries every host within a deadline and raises
    SinkUnavailable when none answers; afterwards the client reconnects for
    ever with ``reconnect_choice``."""
    import nats
    from nats.aio.client import Client

    try:
        tls = opts.tls_context()
    except (OSError, ValueError) as exc:
        raise SinkUnavailable(f"nats: cannot load TLS files: {exc}") from None
    if opts.unverified:
        log.warning("nats TLS without CACert and Secure: the server certificate is not "
                    "verified", hosts=opts.hosts)

    errors = []

    async def error_cb(exc):
        errors[:] = [exc]
        if on_error is not None:
            on_error(exc)
        log.debug("nats client error", name=name, error=repr(exc)[:200])

    async def disconnected_cb():
        if nc.options.get("max_reconnect_attempts") == -1 and not nc.is_closed:
            log.warning("nats disconnected", name=name)

    async def reconnected_cb():
        url = nc.connected_url
        log.info("nats reconnected", name=name,
                 server=f"{url.hostname}:{url.port}" if url else None)

    nc = Client()
    kwargs = dict(
        servers=opts.hosts, name=name, connect_timeout=opts.timeout,
        allow_reconnect=True, max_reconnect_attempts=1, reconnect_time_wait=0.1,
        reconnect_to_server_handler=reconnect_choice, pending_size=pending_size,
        flush_timeout=opts.timeout, ping_interval=10, max_outstanding_pings=2,
        error_cb=error_cb, disconnected_cb=disconnected_cb, reconnected_cb=reconnected_cb,
    )
    if tls is not None:
        kwargs["tls"] = tls
    if opts.user:
        kwargs["user"], kwargs["password"] = opts.user, opts.password
    # The first connection tries every host twice (max_reconnect_attempts=1)
    # and then fails, so a critical sink can refuse to boot; once connected
    # the client reconnects for ever (nats-py reads this option on every
    # reconnect attempt).
    # The deadline guards against nats-py hanging after a failed TLS handshake.
    deadline = max(2.0, 2 * len(opts.hosts) * (opts.timeout + 0.1) + 0.5)
    try:
        await asyncio.wait_for(nc.connect(**kwargs), deadline)
    except (asyncio.TimeoutError, OSError, nats.errors.Error) as exc:
        try:
            await asyncio.wait_for(nc.close(), 1.0)
        except Exception:
            pass
        cause = errors[0] if errors else exc
        raise SinkUnavailable(f"nats: cannot connect to any of {', '.join(opts.hosts)}: "
                              f"{cause!r}"[:400]) from None
    nc.options["max_reconnect_attempts"] = -1
    url = nc.connected_url
    log.info("nats connected", name=name,
             server=f"{url.hostname}:{url.port}" if url else None)
    return nc


def _default(value):
    if isinstance(value, (set, frozenset)):
        return list(value)
    raise TypeError


class NatsSink(Sink):
    service = "nats"
    entry_keys = NOTIFY_KEYS
    multi_writer = True

    def __init__(self, entry, config):
        super().__init__(entry, config)
        self.opts = NatsOptions.from_entry(entry)
        self.subject = self.opts.subject
        self.nc = None
        self.js = None
        self.name = "tracker-%d" % os.getpid()

    async def start(self):
        if self.nc is not None:
            return
        nc = await connect(self.opts, self.name)
        if self.opts.jetstream:
            try:
                js = nc.jetstream(timeout=self.opts.timeout,
                                  publish_async_max_pending=8192)
                if self.opts.stream:
                    await self._ensure_stream(js)
            except BaseException:
                await nc.close()
                raise
            self.js = js
        self.nc = nc

    async def _ensure_stream(self, js):
        import nats.js.errors
        from nats.js.api import StorageType, StreamConfig
        try:
            info = await js.stream_info(self.opts.stream)
            subjects = info.config.subjects or []
            log.info("nats stream found", stream=self.opts.stream, subjects=subjects)
            return
        except nats.js.errors.NotFoundError:
            pass
        except Exception as exc:
            raise SinkUnavailable(f"nats: JetStream stream {self.opts.stream}: {exc!r}") from None
        try:
            await js.add_stream(StreamConfig(name=self.opts.stream, subjects=[self.subject],
                                             num_replicas=self.opts.replicas,
                                             storage=StorageType.FILE))
        except Exception as exc:
            raise SinkUnavailable(f"nats: cannot create JetStream stream "
                                  f"{self.opts.stream}: {exc!r}") from None
        log.info("nats stream created", stream=self.opts.stream, subjects=[self.subject],
                 replicas=self.opts.replicas)

    def _payloads(self, events):
        dumps = orjson.dumps
        return [dumps(ev, default=_default) for ev in events]

    async def write_batch(self, events):
        if not events:
            return 0
        nc = self.nc
        if nc is None:
            raise SinkUnavailable("nats: not started")
        if not nc.is_connected:
            raise SinkUnavailable("nats: not connected (reconnecting); batch kept")
        payloads = self._payloads(events)
        if self.js is not None:
            await self._publish_jetstream(events, payloads)
        else:
            publish = nc.publish
            subject = self.subject
            for payload in payloads:
                await publish(subject, payload)
            # PONG: the server has read the whole batch.
            await nc.flush(timeout=self.opts.timeout)
        return len(events)

    async def _publish_jetstream(self, events, payloads):
        js = self.js
        subject = self.subject
        stream = self.opts.stream or None
        futures = []
        try:
            for ev, payload in zip(events, payloads):
                futures.append(await js.publish_async(
                    subject, payload, stream=stream, headers={"Nats-Msg-Id": ev["eid"]}))
            await asyncio.wait_for(asyncio.gather(*futures), self.opts.timeout)
        except BaseException:
            for fut in futures:
                if not fut.done():
                    fut.cancel()
            raise

    async def close(self):
        nc, self.nc, self.js = self.nc, None, None
        if nc is None:
            return
        try:
            if nc.is_connected:
                await nc.flush(timeout=self.opts.timeout)
        except Exception:
            pass
        try:
            await nc.close()
        except Exception as exc:
            log.debug("nats close failed", error=repr(exc))
