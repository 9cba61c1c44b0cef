"""Acks coalesced where the order allows (the workers' and the SDK's serve()).

A consumer's messages finish out of order (handled concurrently, or waiting for something).
``Acks`` remembers them in the order they arrived; when a message is done, the longest run
of finished ones at the front is acknowledged with one ``ack(multiple=True)`` (RabbitMQ
acks every earlier delivery of the channel with it, and every earlier one *is* in that
run, since a channel's deliveries arrive in tag order). A message finished behind one
still open waits for it, so that nothing open is ever acknowledged; past ``most_waiting``
of them (MOST_WAITING, or less for a small prefetch window: half of it) they are acked
alone, so that a slow message does not hold the prefetch window.

A message handed back (nacked, or rejected into the quarantine) goes through ``Acks`` too,
and every frame is sent one at a time, in the order decided here: aiormq's write queue is
bounded, and a frame that finds it full can be overtaken by a later one, so that an
``ack(multiple=True)`` of tag 9 could reach the broker before the lone ack of tag 5 and
settle it first; the broker then closes the channel on the lone ack ("unknown delivery
tag"), and every unacked delivery on it comes again.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from ..errors import BrokerError
from ..logs import get_logger
from .transport import Incoming

log = get_logger("backbone.broker")
# finished behind an open message and held for one multiple ack, at most (then acked alone)
MOST_WAITING = 32


@dataclass(eq=False, slots=True)
class _Entry:
    key: int  # id() of its message
    message: Incoming | None  # let go of once settled, so that its body is freed
    size: int
    done: bool = False
    settled: bool = False  # acked alone, or rejected: not to be acked again


class Acks:
    """The open messages of one consumer, in arrival order."""

    def __init__(self) -> None:
        self._open: deque[_Entry] = deque()
        self._by_message: dict[int, _Entry] = {}
        self.frames = 0  # ack frames sent: fewer than messages when they coalesce
        self._waiting = 0  # finished, not yet acked
        self._sending = asyncio.Lock()  # one frame at a time, in order (fair: FIFO)
        self.held = 0  # bytes of the bodies arrived and not yet settled (a byte budget's)
        self.most_waiting = MOST_WAITING  # see fit()

    def arrived(self, message: Incoming) -> None:
        entry = _Entry(id(message), message, len(message.body))
        self._open.append(entry)
        self.held += entry.size
        self._by_message[entry.key] = entry

    def fit(self, window: int) -> None:
        """The consumer's prefetch window is ``window``: at most half of it waits behind an
        open message (a slow one must not hold it all)."""
        self.most_waiting = min(MOST_WAITING, window // 2)

    def __len__(self) -> int:
        return len(self._open)

    async def done(self, *messages: Incoming) -> None:
        """These are finished: ack them, with every earlier finished one where possible
        (one acked already is skipped: acking twice would close the channel)."""
        for message in messages:
            entry = self._by_message.get(id(message))
            if entry is not None and not entry.done:
                entry.done = True
                self._waiting += 1
        await self._flush()

    async def handed_back(self, message: Incoming, *, requeue: bool) -> None:
        """Nack it: back to its queue (``requeue``) or dead-lettered (the quarantine).
        Done, and never acked here; the finished ones behind it are acked now."""
        entry = self._by_message.get(id(message))
        if entry is not None and not entry.settled:
            if entry.done:
                self._waiting -= 1
            entry.done = True
            self._settle(entry)
        async with self._sending:
            try:
                await message.nack(requeue=requeue)
            except BrokerError as exc:  # the channel is gone: the broker redelivers it
                log.warning("could not hand back; the broker will", error=str(exc)[:300])
        await self._flush()

    async def _flush(self) -> None:
        """The finished run at the front in one frame; past ``most_waiting`` finished behind an
        open one, those alone (a slow message must not hold the prefetch window)."""
        last: Incoming | None = None
        while self._open and self._open[0].done:
            entry = self._open.popleft()
            if not entry.settled:
                last = self._settle(entry)
                self._waiting -= 1
        frames = [] if last is None else [(last, True)]
        if self._waiting > self.most_waiting:
            alone = [e for e in self._open if e.done and not e.settled]
            frames += [(self._settle(entry), False) for entry in alone]
            self._waiting -= len(alone)
        if frames:
            await self._send(frames)

    def _settle(self, entry: _Entry) -> Incoming:
        """Acked or handed back from here on: its bytes no longer held, its message let go
        and forgotten by id() at once (a settled entry may wait at the front a while, and a
        new delivery may take its message's address, hence its id, meanwhile)."""
        message, entry.message = entry.message, None
        assert message is not None
        del self._by_message[entry.key]
        entry.settled = True
        self.held -= entry.size
        return message

    async def _send(self, frames: list[tuple[Incoming, bool]]) -> None:
        """These acks (message, multiple) in this order, none overtaken by a later one."""
        self.frames += len(frames)
        async with self._sending:
            for message, multiple in frames:
                try:
                    await message.ack(multiple=multiple)
                except BrokerError as exc:  # that channel is gone: the broker redelivers
                    # the rest may be on a new one (a reconnection): each is still tried
                    log.warning("could not ack; the broker will redeliver", error=str(exc)[:300])
