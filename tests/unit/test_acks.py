"""Acks coalesced where the order allows: one ``ack(multiple=True)`` for a finished run at
the front, a lone ack for one finished behind an open one, and nothing open ever acked."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from backbone.broker import acks as acks_module
from backbone.broker.acks import Acks


@dataclass(eq=False)
class Message:
    """The part of an incoming message Acks uses; a channel acks in tag order."""

    tag: int
    channel: list[tuple[int, bool]] = field(default_factory=list)
    handed_back: list[tuple[int, bool]] = field(default_factory=list)
    body: bytes = b"."

    async def ack(self, multiple: bool = False) -> None:
        self.channel.append((self.tag, multiple))

    async def nack(self, requeue: bool = True) -> None:
        self.handed_back.append((self.tag, requeue))


def settled(sent: list[tuple[int, bool]], arrived: int) -> set[int]:
    """What the channel's acks settle: a multiple ack every earlier tag too."""
    done: set[int] = set()
    for tag, multiple in sent:
        done |= set(range(1, tag + 1)) if multiple else {tag}
    return done & set(range(1, arrived + 1))


@pytest.mark.parametrize(
    ("finishing", "frames", "acked_after_each"),
    [
        ([[1, 2, 3]], [(3, True)], [{1, 2, 3}]),  # all at once: one frame
        ([[1], [2], [3]], [(1, True), (2, True), (3, True)], [{1}, {1, 2}, {1, 2, 3}]),
        # 2 and 3 finish behind the open 1 and wait for it; then one frame for all three
        ([[2], [3], [1]], [(3, True)], [set(), set(), {1, 2, 3}]),
        ([[3], [1, 2]], [(3, True)], [set(), {1, 2, 3}]),
        # 3 waits behind the open 2; 1 ends a run at once
        ([[3], [1], [2]], [(1, True), (3, True)], [set(), {1}, {1, 2, 3}]),
        # 1 done twice (a handler that acked what serve() acks too): acked once
        ([[1], [1], [2, 3]], [(1, True), (3, True)], [{1}, {1}, {1, 2, 3}]),
    ],
)
async def test_acks_coalesce_without_acking_anything_open(
    finishing: list[list[int]],
    frames: list[tuple[int, bool]],
    acked_after_each: list[set[int]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(acks_module, "MOST_WAITING", 3)
    channel: list[tuple[int, bool]] = []
    messages = {tag: Message(tag, channel) for tag in (1, 2, 3)}
    acks = Acks()
    for message in messages.values():
        acks.arrived(message)  # type: ignore[arg-type]
    for step, expected in zip(finishing, acked_after_each, strict=True):
        await acks.done(*(messages[tag] for tag in step))  # type: ignore[arg-type]
        assert settled(channel, 3) == expected
    assert channel == frames
    assert len(acks) == 0 and acks.frames == len(frames)


async def test_a_message_handed_back_is_never_acked_and_does_not_block() -> None:
    channel: list[tuple[int, bool]] = []
    first, second = Message(1, channel), Message(2, channel)
    acks = Acks()
    acks.arrived(first)  # type: ignore[arg-type]
    acks.arrived(second)  # type: ignore[arg-type]
    await acks.handed_back(first, requeue=False)  # type: ignore[arg-type]  # quarantined
    await acks.done(second)  # type: ignore[arg-type]
    # 2 ends the run, and a multiple ack on 2 settles 1 only if it were still unsettled:
    # it is not (dead-lettered), so RabbitMQ acks just 2
    assert first.handed_back == [(1, False)]
    assert channel == [(2, True)] and len(acks) == 0


async def test_held_counts_the_bytes_of_every_message_not_yet_settled() -> None:
    """What a byte budget reads: a message finished behind an open one is still held (its
    body is kept for the multiple ack); one handed back (or acked alone) is let go."""
    channel: list[tuple[int, bool]] = []
    one, two, three = (Message(n, channel, body=b"x" * 10**n) for n in (1, 2, 3))
    acks = Acks()
    for message in (one, two, three):
        acks.arrived(message)  # type: ignore[arg-type]
    assert acks.held == 1110
    await acks.done(two)  # type: ignore[arg-type]
    await acks.handed_back(three, requeue=True)  # type: ignore[arg-type]
    assert acks.held == 110  # two waits behind one; three, handed back, is let go
    await acks.done(one)  # type: ignore[arg-type]
    assert acks.held == 0 and channel == [(2, True)]


async def test_past_most_waiting_the_finished_ones_are_acked_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A slow message at the front must not hold the prefetch window: past MOST_WAITING
    finished behind it, they go alone; the slow one then acks itself only."""
    monkeypatch.setattr(acks_module, "MOST_WAITING", 1)
    channel: list[tuple[int, bool]] = []
    messages = {tag: Message(tag, channel) for tag in (1, 2, 3)}
    acks = Acks()
    for message in messages.values():
        acks.arrived(message)  # type: ignore[arg-type]
    await acks.done(messages[2])  # type: ignore[arg-type]  # one waiting: at the bound
    assert channel == []
    await acks.done(messages[3])  # type: ignore[arg-type]  # past it
    assert channel == [(2, False), (3, False)]
    await acks.done(messages[1])  # type: ignore[arg-type]
    assert channel == [(2, False), (3, False), (1, True)] and len(acks) == 0


@dataclass(eq=False)
class SlowNack(Message):
    """Its nack frame waits for room in the write queue until ``room`` is set."""

    room: asyncio.Event = field(default_factory=asyncio.Event)
    order: list[str] = field(default_factory=list)

    async def nack(self, requeue: bool = True) -> None:
        self.order.append(f"nack {self.tag} waiting")
        await self.room.wait()
        self.order.append(f"nack {self.tag}")

    async def ack(self, multiple: bool = False) -> None:
        self.order.append(f"ack {self.tag}")


async def test_a_small_window_lets_half_of_it_wait_behind_a_slow_message() -> None:
    """With a window of 4, a slow message at the front must not keep the three after it
    unacked (the broker would send nothing more): past two waiting, they go alone."""
    channel: list[tuple[int, bool]] = []
    messages = {tag: Message(tag, channel) for tag in (1, 2, 3, 4)}
    acks = Acks()
    acks.fit(4)
    for message in messages.values():
        acks.arrived(message)  # type: ignore[arg-type]
    await acks.done(messages[2], messages[3])  # type: ignore[arg-type]  # two: at the bound
    assert channel == []
    await acks.done(messages[4])  # type: ignore[arg-type]
    assert channel == [(2, False), (3, False), (4, False)]


async def test_frames_go_one_at_a_time_in_the_order_decided() -> None:
    """aiormq's bounded write queue lets a later frame overtake one waiting for room: the
    multiple ack of 2 would then settle 1 before 1's nack, and the broker closes the
    channel on the nack. So the ack waits until the nack is written."""
    order: list[str] = []
    room = asyncio.Event()
    first, second = (SlowNack(tag, room=room, order=order) for tag in (1, 2))
    acks = Acks()
    acks.arrived(first)  # type: ignore[arg-type]
    acks.arrived(second)  # type: ignore[arg-type]
    nack = asyncio.create_task(acks.handed_back(first, requeue=True))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    ack = asyncio.create_task(acks.done(second))  # type: ignore[arg-type]
    for _ in range(5):
        await asyncio.sleep(0)
    assert order == ["nack 1 waiting"]  # the ack has not overtaken it
    room.set()
    await asyncio.gather(nack, ack)
    assert order == ["nack 1 waiting", "nack 1", "ack 2"]


async def test_a_new_delivery_that_takes_a_settled_ones_place_in_memory_is_acked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A message acked alone behind an open one is let go of at once (its body freed) while
    its entry waits at the front; a delivery that then arrives at the same address (the
    same id(), which CPython reuses) must still be found and acked when it is done. (Once,
    the old entry's removal took the new one's with it: the new message and every one
    finished behind it stayed unacked until the channel closed, 29 handed back after a
    clean stop.) The reuse is made certain here: id() gives both the same key."""
    monkeypatch.setattr(acks_module, "id", lambda m: m.tag if m.tag != 5 else 4, raising=False)
    channel: list[tuple[int, bool]] = []
    acks = Acks()
    acks.fit(4)  # two may wait behind an open message
    first, *behind = (Message(tag, channel) for tag in (1, 2, 3, 4))
    for message in (first, *behind):
        acks.arrived(message)  # type: ignore[arg-type]
    await acks.done(*behind)  # type: ignore[arg-type]  # past two waiting: acked alone
    assert channel == [(2, False), (3, False), (4, False)]
    newcomer = Message(5, channel)  # at the freed address of 4
    acks.arrived(newcomer)  # type: ignore[arg-type]
    await acks.done(first)  # type: ignore[arg-type]  # 1 to 4 leave the front
    await acks.done(newcomer)  # type: ignore[arg-type]
    assert channel[-1] == (5, True) and len(acks) == 0 and acks.held == 0
