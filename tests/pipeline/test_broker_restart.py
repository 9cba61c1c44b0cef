"""The validator survives a broker restart: it reconnects and carries on. This module has a
node of its own, since it restarts it.

(A SIGKILLed single node recovers its quorum queues only after about a minute on RabbitMQ
3.10, publishes being refused meanwhile; the validator's in-place retries and the delivery
limit cover that, but a test of it would take minutes.)"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import aio_pika
import pytest

from backbone.broker import localnode, topology
from backbone.broker.mgmt import Management

from ..conftest import SENDER, make_document
from .conftest import Broker, Pipeline
from .helpers import ready_count, submit, wait_for

pytestmark = pytest.mark.pipeline
RECIPIENT = "000.00.00.H41"


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    if not localnode.available():
        pytest.skip("rabbitmq-server is not installed: no node of its own to kill")
    node = localnode.LocalNode().start()
    try:
        yield Broker(node.amqp_url, Management(node.mgmt_url), node)
    finally:
        node.stop()


async def test_the_validator_reconnects_after_the_broker_restarts(pipeline: Pipeline) -> None:
    node = pipeline.broker.node
    assert node is not None
    for code in (SENDER, RECIPIENT):
        await pipeline.add_agency(code)
    sign = pipeline.signers["G22"].sign
    await submit(
        pipeline, sign(make_document(recipients=[RECIPIENT], document_id=f"before-{uuid.uuid4()}"))
    )
    await wait_for(lambda: _count(pipeline, 1), 20)

    await asyncio.to_thread(node.shutdown)  # every connection drops
    await asyncio.to_thread(node.start)

    after = sign(make_document(recipients=[RECIPIENT], document_id=f"after-{uuid.uuid4()}"))
    for _ in range(60):  # quorum queues take a moment to recover: publish until confirmed
        try:
            await submit(pipeline, after)
            break
        except (aio_pika.exceptions.AMQPError, ConnectionError, OSError):
            await asyncio.sleep(1)
    await wait_for(lambda: _count(pipeline, 2), 60)  # routed by the same, reconnected validator
    assert pipeline.validator.consuming


async def _count(pipeline: Pipeline, expected: int) -> bool:
    return await ready_count(pipeline.url(), topology.inbox(RECIPIENT)) >= expected
