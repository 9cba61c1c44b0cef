"""The undeliverable consumer settles every message it takes: a copy it cannot report for
an unexpected reason goes to the quarantine instead of holding its prefetch for ever."""

from __future__ import annotations

import pytest

from backbone.config import Settings
from backbone.errors import BrokerRefused
from backbone.workers.unroutable import Unroutable


class Message:
    """What the consumer calls on a message, recorded."""

    def __init__(self, fail_settling: bool = False) -> None:
        self.calls: list[str] = []
        self.fail_settling = fail_settling

    async def reject(self, requeue: bool) -> None:
        self.calls.append(f"reject requeue={requeue}")
        if self.fail_settling:
            raise BrokerRefused("channel closed")

    async def nack(self, requeue: bool) -> None:
        self.calls.append(f"nack requeue={requeue}")
        if self.fail_settling:
            raise BrokerRefused("channel closed")


@pytest.mark.parametrize(
    ("fault", "fail_settling", "expected"),
    [
        (None, False, ["nack requeue=False"]),  # reported: dead-lettered, kept for a replay
        (ValueError("a hostile header"), False, ["nack requeue=False"]),
        (BrokerRefused("not confirmed"), False, ["nack requeue=True"]),  # retried
        (BrokerRefused("not confirmed"), True, ["nack requeue=True"]),  # and no exception
        (ValueError("x"), True, ["nack requeue=False"]),
    ],
)
async def test_every_message_is_settled(
    fault: Exception | None, fail_settling: bool, expected: list[str]
) -> None:
    settings = Settings()
    consumer = Unroutable(settings, None)

    async def report(message: object) -> None:
        if fault is not None:
            raise fault

    consumer.report = report  # type: ignore[method-assign]
    message = Message(fail_settling)
    await consumer.handle(message)  # type: ignore[arg-type]
    assert message.calls == expected
