"""The database goes away for ten seconds under the tracker: no event is lost."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import pytest
from sqlalchemy import func, insert, select

from backbone.broker import topology
from backbone.events import Event, RoutedEvent, routing_key
from backbone.store.models import Delivery, Document, EventRecord

from ..databases import admin, migrated, postgres_unreachable
from .conftest import Pipeline
from .helpers import wait_for

pytestmark = pytest.mark.pipeline
RECIPIENTS = ("000.00.00.H41", "000.00.00.H14")


@pytest.fixture
def pipeline_database(tmp_path: Path) -> Iterator[str]:
    if unreachable := postgres_unreachable():
        pytest.skip(unreachable)
    with migrated("postgresql", tmp_path) as url:
        yield url


async def publish(pipeline: Pipeline, events: list[Event]) -> None:
    connection = await aio_pika.connect(pipeline.url())
    try:
        channel = await connection.channel()
        exchange = await channel.get_exchange(topology.EVENTS)
        for event in events:
            await exchange.publish(
                aio_pika.Message(event.body(), message_id=event.event_id, delivery_mode=2),
                routing_key(event),
            )
    finally:
        await connection.close()


async def test_ten_seconds_without_the_database_lose_nothing(pipeline: Pipeline) -> None:
    database = pipeline.settings.database_url.rsplit("/", 1)[1]
    ids = [str(uuid.uuid4()) for _ in range(300)]
    now = datetime.now(UTC)
    async with pipeline.validator.store.transaction() as session:
        await session.execute(
            insert(Document),
            [
                {
                    "id": i,
                    "sender": "000.00.00.G22",
                    "document_id": f"outage-{i}",
                    "content_sha256": "0" * 64,
                    "size": 1,
                    "submitted_at": now,
                    "accepted_at": now,
                }
                for i in ids
            ],
        )
    events: list[Event] = [
        RoutedEvent(
            backbone_id=i,
            sender="000.00.00.G22",
            document_id=f"outage-{i}",
            recipient=r,
        )
        for i in ids
        for r in RECIPIENTS
    ]
    third = len(events) // 3
    await publish(pipeline, events[:third])

    await admin(f"ALTER DATABASE {database} ALLOW_CONNECTIONS false")
    await admin(
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'"
    )
    try:
        await publish(pipeline, events[third : 2 * third])  # while the database is away
        await asyncio.sleep(10)
    finally:
        await admin(f"ALTER DATABASE {database} ALLOW_CONNECTIONS true")
    await publish(pipeline, events[2 * third :])

    async def all_recorded() -> bool:
        async with pipeline.validator.store.sessions() as session:
            count = (
                await session.execute(select(func.count()).select_from(EventRecord))
            ).scalar_one()
            return count >= len(events)

    await wait_for(all_recorded, 60)
    async with pipeline.validator.store.sessions() as session:
        recorded = (
            await session.execute(select(func.count()).select_from(EventRecord))
        ).scalar_one()
        deliveries = (
            await session.execute(select(func.count()).select_from(Delivery))
        ).scalar_one()
    assert recorded == len(events) == deliveries  # each once: none lost, none doubled
