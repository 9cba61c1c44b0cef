"""The gateway SDK on the in-memory broker: what it publishes, what it answers, what it drops.

The SDK through the whole backbone, in memory and on RabbitMQ alike, is tests/bodies/sdk.py;
on RabbitMQ only (confirms, permissions), tests/pipeline/test_cli_messaging.py and
test_contract.py.
"""

from __future__ import annotations

import uuid

import pytest

from backbone import AsyncGateway, Delivery, Gateway, SendError, edxml
from backbone.broker import topology
from backbone.broker.transport import Outgoing
from backbone.errors import BrokerUnreachable
from backbone.testing import MemoryBroker

from ..conftest import SENDER, make_document

H41 = "000.00.00.H41"


def gateway(broker: MemoryBroker, user: str, *, connected_as: str | None = None) -> AsyncGateway:
    return AsyncGateway(username=user, transport=broker.transport(connected_as or user))


async def deliver(broker: MemoryBroker, package: edxml.DocumentPackage, message_id: str) -> None:
    """One copy in H41's inbox, as the validator publishes it."""
    async with broker.transport("backbone").connect() as connection:
        routed = await connection.publish(
            topology.DELIVER,
            Outgoing(
                edxml.build(package),
                H41,
                message_id=message_id,
                type="edoc",
                headers={"x-backbone-id": message_id.partition(":")[0]},
            ),
            mandatory=True,
        )
    assert routed


def statuses(broker: MemoryBroker) -> list[tuple[str | None, edxml.StatusPackage]]:
    """The statuses submitted so far, with who published each."""
    found = []
    for message in broker.take(topology.VALIDATE):
        assert message.type == "status"
        package = edxml.parse(message.body)
        assert isinstance(package, edxml.StatusPackage)
        found.append((message.user_id, package))
    return found


async def test_send_publishes_to_validate_as_the_principal() -> None:
    broker = MemoryBroker()
    package = make_document()
    async with gateway(broker, SENDER) as sender:
        assert await sender.send(package) == package.document_id
    (message,) = broker.take(topology.VALIDATE)
    assert (message.exchange, message.routing_key) == (topology.SUBMIT, SENDER)
    assert (message.user_id, message.type) == (SENDER, "edoc")
    assert message.message_id
    assert edxml.parse(message.body).document_id == package.document_id


async def test_a_returned_publish_is_a_send_error() -> None:
    broker = MemoryBroker()
    broker.unbind(topology.VALIDATE, topology.SUBMIT, "#")  # nothing takes submissions
    async with gateway(broker, SENDER) as sender:
        with pytest.raises(SendError, match=r"did not take .* returned"):
            await sender.send(make_document())


async def test_a_user_id_the_broker_refuses_is_a_send_error() -> None:
    broker = MemoryBroker()
    async with gateway(broker, SENDER, connected_as=H41) as sender:
        with pytest.raises(SendError, match=r"did not take .*user_id"):
            await sender.send(make_document())
    assert broker.depth(topology.VALIDATE) == 0


async def test_receive_answers_01_and_drops_a_copy_already_handled() -> None:
    broker = MemoryBroker()
    inbox = broker.declare_inbox(H41)
    package = make_document(recipients=(H41,))
    message_id = f"{uuid.uuid4().hex}:{H41}"
    await deliver(broker, package, message_id)
    async with gateway(broker, H41) as recipient:
        received: list[Delivery] = []
        async for delivery in recipient.receive(inbox, timeout=0.2):
            received.append(delivery)
            await delivery.ack()
        (delivery,) = received
        assert delivery.package.document_id == package.document_id
        assert (delivery.recipient, delivery.redelivered) == (H41, False)
        assert delivery.backbone_id == message_id.partition(":")[0]
        ((publisher, status),) = statuses(broker)
        assert publisher == H41
        assert (status.header.status_code, status.document_id) == ("01", package.document_id)
        assert status.sender == H41

        await deliver(broker, package, message_id)  # the broker redelivers a copy
        assert [d async for d in recipient.receive(inbox, timeout=0.2)] == []
    assert broker.depth(inbox) == 0  # acked, not handed back when the connection closed
    assert statuses(broker) == []  # and not answered twice


async def test_receive_stops_after_count_and_leaves_the_rest() -> None:
    broker = MemoryBroker()
    inbox = broker.declare_inbox(H41)
    for _ in range(3):
        await deliver(broker, make_document(recipients=(H41,)), f"{uuid.uuid4().hex}:{H41}")
    async with gateway(broker, H41) as recipient:
        async for delivery in recipient.receive(inbox, timeout=0.2, count=1):
            await delivery.ack()
    assert broker.depth(inbox) == 2


def test_a_gateway_takes_a_url_or_a_transport() -> None:
    with pytest.raises(ValueError, match="url or a transport"):
        AsyncGateway(username=SENDER)
    with pytest.raises(ValueError, match="not both"):
        AsyncGateway(
            "amqp://127.0.0.1/", username=SENDER, transport=MemoryBroker().transport(SENDER)
        )


async def test_no_broker_is_broker_unreachable() -> None:
    nowhere = "amqp://user:password@127.0.0.1:1/"  # nothing listens on port 1
    with pytest.raises(BrokerUnreachable):
        async with AsyncGateway(nowhere, username=SENDER, connect_timeout=5):
            pass
    with pytest.raises(BrokerUnreachable), Gateway(nowhere, username=SENDER, connect_timeout=5):
        pass
