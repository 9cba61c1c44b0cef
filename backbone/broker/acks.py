"""Acks coalesced where the order allows (the workers' and the SDK's serve()).

A consumer's messages finish out of order (handled concurrently, or waiting for something).
``Acks`` remembers them in the order they arrived; when a message is done, the longest run
of finished ones at the front is acknowledged with one ``ack(multiple=True)`` (RabbitMQ
acks every earlier delivery of the channel with it, and every earlier one *is* in that
run, since a channel's deliveries arrive in tag order). A message finished behind one
still open is acked alone, so that nothing open is ever acknowledged with it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from ..errors import BrokerError
from ..logs import get_logger
from .transport import Incoming

log = get_logger("backbone.broker")


@dataclass(eq=False, slots=True)
class _Entry:
    message: Incoming
    done: bool = False
    settled: bool = False  # acked alone, or rejected: not to be acked again


class Acks:
    """The open messages of one consumer, in arrival order."""

    def __init__(self) -> None:
        self._open: deque[_Entry] = deque()
        self._by_message: dict[int, _Entry] = {}
        self.frames = 0  # ack frames sent: fewer than messages when they coalesce

    def arrived(self, message: Incoming) -> None:
        entry = _Entry(message)
        self._open.append(entry)
        self._by_message[id(message)] = entry

    def __len__(self) -> int:
        return len(self._open)

    async def done(self, *messages: Incoming) -> None:
        """These are finished: ack them, with every earlier finished one where possible
        (one acked already is skipped: acking twice would close the channel)."""
        for message in messages:
            entry = self._by_message.get(id(message))
            if entry is not None:
                entry.done = True
        last: _Entry | None = None
        while self._open and self._open[0].done:
            entry = self._open.popleft()
            del self._by_message[id(entry.message)]
            if not entry.settled:
                last = entry
        if last is not None:
            await self._ack(last.message, multiple=True)
        for message in messages:
            behind = self._by_message.get(id(message))
            if behind is not None and not behind.settled:  # behind an open one: alone
                behind.settled = True
                await self._ack(message, multiple=False)

    def settled(self, message: Incoming) -> None:
        """Settled some other way (rejected, handed back): done, and never acked here."""
        entry = self._by_message.get(id(message))
        if entry is not None:
            entry.done = entry.settled = True

    async def _ack(self, message: Incoming, *, multiple: bool) -> None:
        self.frames += 1
        try:
            await message.ack(multiple=multiple)
        except BrokerError as exc:  # the channel is gone: the broker redelivers them
            log.warning("could not ack; the broker will redeliver", error=str(exc)[:300])
