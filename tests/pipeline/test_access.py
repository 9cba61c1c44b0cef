"""Isolation and sender authentication on a real broker: each agency reads only its own
inbox and speaks only for itself; the broker refuses what it can, the validator the rest.

Every principal here is provisioned as `agency add` / `gateway add` provision it, and the
workers run as their own user (tests/pipeline/conftest.py).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
from aiormq.exceptions import (
    ChannelAccessRefused,
    ChannelPreconditionFailed,
    ProbableAuthenticationError,
)

from backbone import signing
from backbone.broker import topology

from ..conftest import SENDER, Signer
from ..worlds import document
from .conftest import PASSWORD, WORKERS, Pipeline
from .helpers import drain, ready_count, rejection, wait_for

pytestmark = pytest.mark.pipeline
A, B = SENDER, "000.00.00.H41"  # two agencies with users of their own
H41_UNIT, H42_UNIT = "000.00.15.H41", "000.00.15.H42"
H41_BARE = "000.00.16.H41"  # no broker user of its own: the gateway serves it
GATEWAY = "lgsp-h41"


@asynccontextmanager
async def channel_of(pipeline: Pipeline, user: str) -> AsyncIterator[AbstractChannel]:
    """A confirming channel on a connection of ``user``'s own."""
    connection = await aio_pika.connect(pipeline.url(user))
    try:
        yield await connection.channel(publisher_confirms=True)
    finally:
        await connection.close()


async def _ack(message: AbstractIncomingMessage) -> None:
    await message.ack()


async def publish(
    channel: AbstractChannel,
    exchange: str,
    routing_key: str,
    body: bytes = b"<x/>",
    *,
    user_id: str | None = None,
) -> None:
    target = await channel.get_exchange(exchange, ensure=False)
    message = aio_pika.Message(
        body, message_id=uuid.uuid4().hex, user_id=user_id, type="edoc", delivery_mode=2
    )
    await target.publish(message, routing_key=routing_key)


async def consume_one(channel: AbstractChannel, queue: str) -> None:
    """Start (and cancel) a consumer: what the broker checks is the right to read."""
    source = await channel.get_queue(queue, ensure=False)
    tag = await source.consume(_ack)
    await source.cancel(tag)


@pytest.fixture
async def agencies(pipeline: Pipeline) -> Pipeline:
    for code in (A, B):
        await pipeline.add_agency(code)
    return pipeline


# --- reading and publishing where one does not belong ---------------------------------------


async def test_an_agency_consumes_its_own_inbox_but_not_another(agencies: Pipeline) -> None:
    async with channel_of(agencies, A) as channel:
        await consume_one(channel, topology.inbox(A))
    async with channel_of(agencies, A) as channel:
        with pytest.raises(ChannelAccessRefused, match="ACCESS_REFUSED"):
            await consume_one(channel, topology.inbox(B))


@pytest.mark.parametrize("queue", [topology.VALIDATE, topology.TRACKER, topology.QUARANTINE])
async def test_an_agency_cannot_read_the_backbones_queues(agencies: Pipeline, queue: str) -> None:
    async with channel_of(agencies, A) as channel:
        with pytest.raises(ChannelAccessRefused, match="ACCESS_REFUSED"):
            await consume_one(channel, queue)


async def test_an_agency_publishes_to_submit(agencies: Pipeline) -> None:
    async with channel_of(agencies, A) as channel:
        await publish(channel, topology.SUBMIT, A, user_id=A)  # confirmed: allowed


@pytest.mark.parametrize("exchange", [topology.DELIVER, topology.EVENTS])
async def test_an_agency_cannot_publish_deliveries_or_events(
    agencies: Pipeline, exchange: str
) -> None:
    async with channel_of(agencies, A) as channel:
        with pytest.raises(ChannelAccessRefused, match="ACCESS_REFUSED"):
            await publish(channel, exchange, B, user_id=A)
    assert await ready_count(agencies.url(), topology.inbox(B)) == 0


async def test_an_agency_cannot_declare_or_delete_a_queue(agencies: Pipeline) -> None:
    async with channel_of(agencies, A) as channel:
        with pytest.raises(ChannelAccessRefused, match="ACCESS_REFUSED"):
            await channel.declare_queue(topology.inbox(A) + ".copy", durable=True)
    async with channel_of(agencies, A) as channel:
        with pytest.raises(ChannelAccessRefused, match="ACCESS_REFUSED"):
            await channel.queue_delete(topology.inbox(A))
    async with channel_of(agencies, A) as channel:
        with pytest.raises(ChannelAccessRefused, match="ACCESS_REFUSED"):
            await channel.declare_exchange("edoc.mine", aio_pika.ExchangeType.FANOUT)
    assert await ready_count(agencies.url(), topology.inbox(A)) == 0  # still there


async def test_an_agency_cannot_bind_its_inbox_to_another_pattern(agencies: Pipeline) -> None:
    async with channel_of(agencies, A) as channel:
        inbox = await channel.get_queue(topology.inbox(A), ensure=False)
        with pytest.raises(ChannelAccessRefused, match="ACCESS_REFUSED"):
            await inbox.bind(topology.DELIVER, routing_key="#")
    signed = agencies.signers["G22"].sign(document(recipients=[B]))
    async with channel_of(agencies, A) as channel:
        await publish(channel, topology.SUBMIT, A, signed, user_id=A)
    await wait_for(lambda: _has(agencies, topology.inbox(B)), 15)
    assert await ready_count(agencies.url(), topology.inbox(A)) == 0  # no copy came to A


async def _has(pipeline: Pipeline, queue: str) -> bool:
    return await ready_count(pipeline.url(), queue) > 0


# --- speaking for another agency -------------------------------------------------------------


async def test_another_agencys_routing_key_is_refused_by_the_broker(agencies: Pipeline) -> None:
    signed = agencies.signers["H41"].sign(document(sender=B, recipients=[A]))
    async with channel_of(agencies, A) as channel:
        with pytest.raises(ChannelAccessRefused, match="ACCESS_REFUSED"):
            await publish(channel, topology.SUBMIT, B, signed, user_id=A)
    assert await ready_count(agencies.url(), topology.inbox(A)) == 0


async def test_another_agencys_user_id_is_refused_by_the_broker(agencies: Pipeline) -> None:
    signed = agencies.signers["G22"].sign(document(recipients=[B]))
    async with channel_of(agencies, A) as channel:
        with pytest.raises(ChannelPreconditionFailed, match="user_id property set to"):
            await publish(channel, topology.SUBMIT, A, signed, user_id=B)
    assert await ready_count(agencies.url(), topology.inbox(B)) == 0


async def test_a_forged_sender_under_its_own_routing_key_is_rejected_by_the_validator(
    agencies: Pipeline,
) -> None:
    """B's genuine, signed package replayed by A under A's identifier: the broker lets A
    publish with its own routing key; the validator sees the package is not A's."""
    third = "000.00.00.H14"
    await agencies.add_agency(third)
    signed = agencies.signers["H41"].sign(document(sender=B, recipients=[third]))
    async with channel_of(agencies, A) as channel:
        await publish(channel, topology.SUBMIT, A, signed, user_id=A)
    delivery = await rejection(agencies)  # in A's inbox, from the backbone
    assert delivery.rejection is not None
    assert delivery.rejection["check"] == "4-sender"
    assert delivery.rejection["code"] == "sender-mismatch"
    assert delivery.rejection["path"].endswith("/From/OrganId")
    description = delivery.package.header.description or ""  # type: ignore[union-attr]
    assert B in description and "routing key" in description
    assert await ready_count(agencies.url(), topology.inbox(third)) == 0
    assert await ready_count(agencies.url(), topology.inbox(B)) == 0


async def test_a_package_signed_with_a_but_sent_as_b_is_refused(agencies: Pipeline) -> None:
    """B's own user, B's routing key and From, but A's (valid) certificate: not bound to B."""
    signed = agencies.signers["G22"].sign(document(sender=B, recipients=[A]))
    async with channel_of(agencies, B) as channel:
        await publish(channel, topology.SUBMIT, B, signed, user_id=B)
    (delivery,) = await drain(agencies, topology.inbox(B), B, count=1)
    assert delivery.rejection is not None
    assert delivery.rejection["check"] == "5-signature"
    assert delivery.rejection["code"] == "wrong-agency"
    assert await ready_count(agencies.url(), topology.inbox(A)) == 0


# --- a provincial gateway ---------------------------------------------------------------------


@pytest.fixture
async def province(pipeline: Pipeline) -> Pipeline:
    await pipeline.add_agency(A)
    for code in (H41_UNIT, H42_UNIT):
        await pipeline.add_agency(code)
    await pipeline.add_agency(H41_BARE, inbox=False)
    await pipeline.add_gateway(GATEWAY, ["*.*.*.H41"])
    return pipeline


async def test_a_gateway_receives_for_its_province_and_nothing_of_another(
    province: Pipeline,
) -> None:
    recipients = [H41_UNIT, H42_UNIT, H41_BARE]
    for_all = province.signers["G22"].sign(document(recipients=recipients))
    async with channel_of(province, A) as channel:
        await publish(channel, topology.SUBMIT, A, for_all, user_id=A)
    # the agency without a user of its own through the gateway's queue; the one with a
    # user of its own in its inbox only (which the gateway may read): one copy each
    (via_gateway,) = await drain(province, topology.gateway_queue(GATEWAY), GATEWAY, count=1)
    assert via_gateway.body == for_all and via_gateway.recipient == H41_BARE
    (in_inbox,) = await drain(province, topology.inbox(H41_UNIT), GATEWAY, count=1)
    assert in_inbox.body == for_all and in_inbox.recipient == H41_UNIT
    assert await ready_count(province.url(), topology.gateway_queue(GATEWAY)) == 0
    assert await ready_count(province.url(), topology.inbox(H41_UNIT)) == 0
    async with channel_of(province, GATEWAY) as channel:
        with pytest.raises(ChannelAccessRefused, match="ACCESS_REFUSED"):
            await consume_one(channel, topology.inbox(H42_UNIT))
    assert await ready_count(province.url(), topology.inbox(H42_UNIT)) == 1  # untouched


async def test_a_gateway_sends_for_its_province_and_not_for_another(
    province: Pipeline, pki: signing.Pki, tmp_path: Path
) -> None:
    issued = pki.issue(H41_UNIT, tmp_path / "unit")
    unit = Signer(issued.code, issued.key, issued.certificate, issued.fingerprint)
    await province.registry.register_certificate(H41_UNIT, unit.certificates[0])
    signed = unit.sign(document(sender=H41_UNIT, recipients=[A]))
    async with channel_of(province, GATEWAY) as channel:
        await publish(channel, topology.SUBMIT, H41_UNIT, signed, user_id=GATEWAY)
    (arrived,) = await drain(province, topology.inbox(A), A, count=1)
    assert arrived.body == signed and arrived.headers["x-sender"] == H41_UNIT
    foreign = province.signers["G22"].sign(document(sender=H42_UNIT, recipients=[A]))
    async with channel_of(province, GATEWAY) as channel:
        with pytest.raises(ChannelAccessRefused, match="ACCESS_REFUSED"):
            await publish(channel, topology.SUBMIT, H42_UNIT, foreign, user_id=GATEWAY)


# --- the backbone's own users ------------------------------------------------------------------


async def test_the_workers_user_reads_no_inbox_and_submits_nothing(agencies: Pipeline) -> None:
    async with channel_of(agencies, WORKERS) as channel:
        with pytest.raises(ChannelAccessRefused, match="ACCESS_REFUSED"):
            await consume_one(channel, topology.inbox(A))
    async with channel_of(agencies, WORKERS) as channel:
        with pytest.raises(ChannelAccessRefused, match="ACCESS_REFUSED"):
            await publish(channel, topology.SUBMIT, A, user_id=WORKERS)


async def watched_connection(
    pipeline: Pipeline, user: str, password: str = PASSWORD
) -> tuple[AbstractConnection, asyncio.Event]:
    """A connection of ``user``, once the management API lists it, and an event set when
    the broker closes it."""
    connection = await aio_pika.connect(pipeline.broker.url(pipeline.vhost, user, password))
    closed = asyncio.Event()
    connection.close_callbacks.add(lambda *_: closed.set())

    async def listed() -> bool:
        return bool(await asyncio.to_thread(pipeline.broker.mgmt.connections, user))

    await wait_for(listed, 10)
    return connection, closed


async def connection_refused(pipeline: Pipeline, user: str, password: str = PASSWORD) -> bool:
    try:
        connection: AbstractConnection = await aio_pika.connect(
            pipeline.broker.url(pipeline.vhost, user, password)
        )
    except ProbableAuthenticationError:
        return True
    await connection.close()
    return False


async def test_revoked_access_closes_connections_and_refuses_new_ones(agencies: Pipeline) -> None:
    _, closed = await watched_connection(agencies, B)
    revoked = await asyncio.to_thread(agencies.provisioner.revoke, B)
    assert revoked.user_deleted and revoked.closed_connections == 1
    await asyncio.wait_for(closed.wait(), 10)
    assert await connection_refused(agencies, B)
