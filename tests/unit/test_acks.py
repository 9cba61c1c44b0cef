"""Acks coalesced where the order allows: one ``ack(multiple=True)`` for a finished run at
the front, a lone ack for one finished behind an open one, and nothing open ever acked."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from backbone.broker.acks import Acks


@dataclass(eq=False)
class Message:
    """The part of an incoming message Acks uses; a channel acks in tag order."""

    tag: int
    channel: list[tuple[int, bool]] = field(default_factory=list)

    async def ack(self, multiple: bool = False) -> None:
        self.channel.append((self.tag, multiple))


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
        # 2 and 3 finish behind the open 1: alone; then 1 alone closes the run
        ([[2], [3], [1]], [(2, False), (3, False), (1, True)], [{2}, {2, 3}, {1, 2, 3}]),
        # 3 behind the open 2: 3 alone; 1 and 2 then one frame for the run up to 2
        ([[3], [1, 2]], [(3, False), (2, True)], [{3}, {1, 2, 3}]),
        # 1 done twice (a handler that acked what serve() acks too): acked once
        ([[1], [1], [2, 3]], [(1, True), (3, True)], [{1}, {1}, {1, 2, 3}]),
    ],
)
async def test_acks_coalesce_without_acking_anything_open(
    finishing: list[list[int]],
    frames: list[tuple[int, bool]],
    acked_after_each: list[set[int]],
) -> None:
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


async def test_a_message_settled_otherwise_is_never_acked_and_does_not_block() -> None:
    channel: list[tuple[int, bool]] = []
    first, second = Message(1, channel), Message(2, channel)
    acks = Acks()
    acks.arrived(first)  # type: ignore[arg-type]
    acks.arrived(second)  # type: ignore[arg-type]
    acks.settled(first)  # type: ignore[arg-type]  # rejected: dead-lettered, say
    await acks.done(second)  # type: ignore[arg-type]
    # 2 ends the run, and a multiple ack on 2 settles 1 only if it were still unsettled:
    # it is not (rejected), so RabbitMQ acks just 2
    assert channel == [(2, True)] and len(acks) == 0
