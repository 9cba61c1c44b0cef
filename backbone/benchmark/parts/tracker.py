"""How many lifecycle events a second the tracker records, on each database.

Documents accepted beforehand; routed events and statuses (01, which the tracker forwards
to the sender) waiting in ``backbone.tracker``, as after a burst; the clock runs from the
tracker's start to the commit of the last event. On a virtual host of its own per database,
on a private RabbitMQ node unless a broker is given.
"""

from __future__ import annotations

import asyncio
import base64
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aio_pika
from aio_pika.abc import DeliveryMode
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, insert, select

from ... import edxml
from ...broker import localnode, topology
from ...broker.mgmt import Management
from ...broker.provisioning import vhost_url
from ...config import Settings
from ...edxml.factory import new_status
from ...events import Event, RoutedEvent, StatusEvent, routing_key
from ...store import Store, migrate
from ...store.models import Document
from ...store.models import EventRecord as EventRow
from ...workers import tracker as tracking
from .. import Progress
from ._databases import PREFIX, Engine

DOCUMENTS = 2500  # 4 events each: routed to two recipients, a status 01 from each
SENDER, RECIPIENTS = "000.00.00.G22", ("000.00.00.H41", "000.00.00.H14")
IN_FLIGHT = 500  # events published at once, with confirms
POLL = 0.05  # seconds between counts of the recorded events
STALL = 60.0  # seconds without an event recorded before the run is called stuck


@asynccontextmanager
async def _tracking(settings: Settings) -> AsyncIterator[None]:
    """The tracker running: the one place this benchmark drives it."""
    async with tracking.Tracker.from_settings(settings).running():
        yield


@contextmanager
def _broker(amqp_url: str | None, mgmt_url: str | None) -> Iterator[tuple[str, Management]]:
    """The broker as its administrator: the one given, or a private node for the run."""
    if amqp_url and mgmt_url:
        yield amqp_url, Management(mgmt_url)
        return
    if not localnode.available():
        raise RuntimeError(
            "the tracker's benchmark needs RabbitMQ: install rabbitmq-server, or give "
            "--amqp-url and --mgmt-url"
        )
    node = localnode.LocalNode().start()
    try:
        yield node.amqp_url, Management(node.mgmt_url)
    finally:
        node.stop()


@contextmanager
def _vhost(amqp_url: str, mgmt: Management) -> Iterator[str]:
    """A virtual host of its own, as the administrator; deleted afterwards."""
    vhost = f"bench-tracker-{uuid.uuid4().hex[:8]}"
    parts = urlsplit(amqp_url)
    admin = parts.username or "guest"
    mgmt.add_vhost(vhost)
    try:
        mgmt.set_permissions(vhost, admin, configure=".*", write=".*", read=".*")
        yield vhost_url(amqp_url, vhost, admin, parts.password or "guest")
    finally:
        mgmt.delete_vhost(vhost)


def _events(ids: list[str], now: datetime) -> list[Event]:
    """Each document routed to both recipients, then their statuses 01."""
    events: list[Event] = [
        RoutedEvent(
            backbone_id=backbone_id,
            sender=SENDER,
            document_id=f"bench-{backbone_id}",
            recipient=recipient,
        )
        for backbone_id in ids
        for recipient in RECIPIENTS
    ]
    for backbone_id in ids:
        for recipient in RECIPIENTS:
            status = new_status(
                reporter=recipient,
                status_code="01",
                document=edxml.ResponseFor(organ_id=SENDER, document_id=f"bench-{backbone_id}"),
            )
            events.append(
                StatusEvent(
                    addressee=SENDER,
                    reporter=recipient,
                    document_id=f"bench-{backbone_id}",
                    status_code="01",
                    occurred_at=now,
                    package=base64.b64encode(edxml.build(status)).decode(),
                )
            )
    return events


async def _accepted(store: Store, ids: list[str], now: datetime) -> None:
    async with store.transaction() as session:
        await session.execute(
            insert(Document),
            [
                {
                    "id": i,
                    "sender": SENDER,
                    "document_id": f"bench-{i}",
                    "content_sha256": "0" * 64,
                    "size": 8000,
                    "submitted_at": now,
                    "accepted_at": now,
                }
                for i in ids
            ],
        )


async def _publish(amqp: str, events: list[Event], advance: Callable[[int], None]) -> None:
    connection = await aio_pika.connect(amqp)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(topology.EVENTS)
        for start in range(0, len(events), IN_FLIGHT):
            batch = events[start : start + IN_FLIGHT]
            await asyncio.gather(
                *(
                    exchange.publish(
                        aio_pika.Message(
                            e.body(), message_id=e.event_id, delivery_mode=DeliveryMode.PERSISTENT
                        ),
                        routing_key(e),
                    )
                    for e in batch
                )
            )
            advance(len(batch))


async def _recorded(store: Store) -> int:
    async with store.sessions() as session:
        count: int = (
            await session.execute(select(func.count()).select_from(EventRow))
        ).scalar_one()
    return count


async def _measure(
    amqp: str, database: str, documents: int, engine: str, progress: Progress
) -> dict[str, float]:
    store = Store(database)
    try:
        ids = [str(uuid.uuid4()) for _ in range(documents)]
        now = datetime.now(UTC)
        await _accepted(store, ids, now)
        events = _events(ids, now)
        publishing = time.perf_counter()
        await _publish(amqp, events, progress(f"publishing {len(events):,} events", len(events)))
        published = time.perf_counter() - publishing
        advance = progress(f"the tracker recording them on {engine}", len(events))
        done = 0
        started = last = time.perf_counter()
        async with _tracking(Settings(amqp_url=amqp, database_url=database)):
            while done < len(events):
                await asyncio.sleep(POLL)
                count = await _recorded(store)
                if count > done:
                    advance(count - done)
                    done, last = count, time.perf_counter()
                elif time.perf_counter() - last > STALL:
                    raise RuntimeError(
                        f"the tracker recorded {done} of {len(events)} events, none for "
                        f"{STALL:.0f} s"
                    )
            elapsed = time.perf_counter() - started
    finally:
        await store.close()
    return {
        "events": len(events),
        "seconds": elapsed,
        "per_second": len(events) / elapsed,
        "publish_seconds": published,
    }


def run(
    documents: int,
    engines: tuple[Engine, ...],
    postgres_url: str,
    amqp_url: str | None,
    mgmt_url: str | None,
    progress: Progress,
) -> dict[str, Any]:
    results = {}
    with tempfile.TemporaryDirectory(prefix="backbone-bench-") as workdir:
        if not (amqp_url and mgmt_url):
            progress("starting a private RabbitMQ node", None)
        with _broker(amqp_url, mgmt_url) as (admin, mgmt):
            for engine in engines:
                progress(f"a virtual host and a fresh {engine} database", None)
                with (
                    _vhost(admin, mgmt) as amqp,
                    migrate.fresh(engine, Path(workdir), postgres_url, PREFIX) as database,
                ):
                    asyncio.run(topology.declare_topology(amqp))
                    results[engine] = asyncio.run(
                        _measure(amqp, database, documents, engine, progress)
                    )
    return {
        "benchmark": "tracker",
        "when": datetime.now(UTC).isoformat(),
        "documents": documents,
        "events_per_database": documents * 2 * len(RECIPIENTS),
        "results": results,
    }


def render(report: dict[str, Any], console: Console) -> None:
    table = Table(
        "database",
        "events/s",
        "events",
        "seconds",
        "publishing s",
        title=f"Tracker: {report['events_per_database']:,} events per database",
        caption="routed events, and statuses 01 forwarded to the sender",
    )
    for engine, f in report["results"].items():
        table.add_row(
            engine,
            f"{f['per_second']:,.0f}",
            str(f["events"]),
            f"{f['seconds']:.2f}",
            f"{f['publish_seconds']:.2f}",
        )
    console.print(table)
