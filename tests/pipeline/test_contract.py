"""The AMQP contract: a gateway written with nothing but pika and schemas/asyncapi.yaml."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pika
import pytest
import yaml

from backbone import edxml
from backbone.client import Gateway

from ..conftest import SENDER, make_document
from .conftest import Pipeline

pytestmark = pytest.mark.pipeline
CONTRACT = yaml.safe_load(
    (Path(__file__).resolve().parents[2] / "schemas" / "asyncapi.yaml").read_text()
)
RECIPIENT = "000.00.00.H41"


def address(channel: str, **parameters: str) -> str:
    return str(CONTRACT["channels"][channel]["address"]).format(**parameters)


def pika_gateway(
    sender_url: str, recipient_url: str, body: bytes, inbox_of: str
) -> tuple[bytes, dict[str, object]]:
    """Publish as the contract says, then wait for the recipient's copy (plain pika, each
    agency with its own user)."""
    connection = pika.BlockingConnection(pika.URLParameters(sender_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(
            address("submit"),
            SENDER,
            body,
            pika.BasicProperties(
                message_id=uuid.uuid4().hex,
                user_id=SENDER,
                type="edoc",
                content_type="application/xml",
                delivery_mode=2,
                timestamp=int(time.time()),
            ),
            mandatory=True,
        )
    finally:
        connection.close()
    connection = pika.BlockingConnection(pika.URLParameters(recipient_url))
    try:
        channel = connection.channel()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            method, properties, received = channel.basic_get(address("inbox", agency=inbox_of))
            if method is not None:
                channel.basic_ack(method.delivery_tag)
                return received, dict(properties.headers or {})
            time.sleep(0.1)
        raise AssertionError("nothing arrived in the recipient's inbox")
    finally:
        connection.close()


def test_the_contract_names_match_the_topology() -> None:
    from backbone.broker import topology

    assert address("submit") == topology.SUBMIT and address("deliver") == topology.DELIVER
    assert address("inbox", agency=RECIPIENT) == topology.inbox(RECIPIENT)
    assert address("gatewayInbox", name="x") == topology.gateway_queue("x")
    assert address("events") == topology.EVENTS and address("tracker") == topology.TRACKER
    assert address("quarantine") == topology.QUARANTINE and address("validate") == topology.VALIDATE


async def test_a_plain_pika_gateway_sends_and_receives(pipeline: Pipeline) -> None:
    for code in (SENDER, RECIPIENT):
        await pipeline.add_agency(code)
    signed = pipeline.signers["G22"].sign(
        make_document(recipients=[RECIPIENT], document_id=f"contract-{uuid.uuid4()}")
    )
    body, headers = await asyncio.to_thread(
        pika_gateway, pipeline.url(SENDER), pipeline.url(RECIPIENT), signed, RECIPIENT
    )
    assert body == signed
    delivery = CONTRACT["components"]["messageTraits"]["delivery"]["headers"]["properties"]
    for header in ("x-backbone-id", "x-sender", "x-edxml-document-id", "x-accepted-at", "x-signer"):
        assert header in delivery and header in headers


async def test_the_synchronous_sdk(pipeline: Pipeline) -> None:
    for code in (SENDER, RECIPIENT):
        await pipeline.add_agency(code)
    signer = pipeline.signers["G22"]
    package = make_document(recipients=[RECIPIENT], document_id=f"sync-{uuid.uuid4()}")

    def roundtrip() -> tuple[str, list[edxml.Package]]:
        with Gateway(
            pipeline.url(SENDER), username=SENDER, key=signer.key, certificates=signer.certificates
        ) as sender:
            document_id = sender.send(package)
        with Gateway(pipeline.url(RECIPIENT), username=RECIPIENT) as recipient:
            received = []
            for delivery in recipient.receive(f"inbox.{RECIPIENT}", timeout=10, count=1):
                delivery.ack()
                received.append(delivery.package)
        return document_id, received

    document_id, received = await asyncio.to_thread(roundtrip)
    assert document_id == package.document_id and received == [package]
