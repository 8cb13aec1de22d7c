"""The repeater's JetStream commit: every message of the group acknowledged,
and a commit retried after the last ack went unanswered neither stops on the
messages already acknowledged nor skips the last one (nats-py's own Msg)."""
import asyncio

import pytest
from nats.aio.msg import Msg

from engine.kafka.repeat import NatsSource


class Client:
    """What a Msg calls on its connection: publish (ack) and request (ack_sync)."""

    def __init__(self, unanswered=0):
        self.sent = []
        self.unanswered = unanswered

    async def publish(self, subject, payload=b""):
        self.sent.append(subject)

    async def request(self, subject, payload=b"", timeout=1.0):
        if self.unanswered:
            self.unanswered -= 1
            raise asyncio.TimeoutError
        self.sent.append(subject)
        return None


class Options:
    timeout = 1.0


def group(client, n):
    return [Msg(_client=client, subject="tic.track", reply=f"$JS.ACK.S.d.1.{i}.{i}.0.0",
                data=b"{}") for i in range(1, n + 1)]


def test_every_message_is_acked_the_last_synchronously():
    client = Client()
    source = NatsSource(Options(), "tic.track", "d", "S", 3, 2)
    msgs = group(client, 3)
    asyncio.run(source.commit(msgs))
    assert client.sent == [m.reply for m in msgs] and all(m.is_acked for m in msgs)


def test_a_commit_retried_after_an_unanswered_last_ack_finishes_the_group():
    client = Client(unanswered=1)
    source = NatsSource(Options(), "tic.track", "d", "S", 3, 2)
    msgs = group(client, 3)
    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(source.commit(msgs))
    assert [m.is_acked for m in msgs] == [True, True, False]
    asyncio.run(source.commit(msgs))                  # as Repeater._commit retries it
    assert client.sent == [m.reply for m in msgs] and all(m.is_acked for m in msgs)
