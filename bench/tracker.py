"""How many lifecycle events a second the tracker records, on SQLite and PostgreSQL.

A private RabbitMQ node; documents accepted beforehand; routed events and statuses (01,
which the tracker forwards to the sender) waiting in backbone.tracker, as after a burst;
the clock runs from the tracker's start to the commit of the last event. Prints figures and saves
bench/results/tracker.json. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
from sqlalchemy import func, insert, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backbone import edxml
from backbone.broker import localnode, topology
from backbone.config import Settings
from backbone.edxml.factory import new_status
from backbone.events import Event, Kind
from backbone.store import Store
from backbone.store.models import Document
from backbone.store.models import Event as EventRow
from backbone.workers import tracker as tracking
from tests.databases import migrated, postgres_unreachable

RESULTS = Path(__file__).resolve().parent / "results"
SENDER, RECIPIENTS = "000.00.00.G22", ("000.00.00.H41", "000.00.00.H14")


async def run(amqp: str, database: str, documents: int) -> dict[str, float]:
    store = Store(database)
    ids = [str(uuid.uuid4()) for _ in range(documents)]
    now = datetime.now(UTC)
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
    events: list[Event] = []
    for backbone_id in ids:
        for recipient in RECIPIENTS:
            events.append(
                Event(
                    kind=Kind.ROUTED,
                    backbone_id=backbone_id,
                    sender=SENDER,
                    document_id=f"bench-{backbone_id}",
                    recipient=recipient,
                )
            )
    for backbone_id in ids:
        for recipient in RECIPIENTS:
            status = new_status(
                reporter=recipient,
                status_code="01",
                document=edxml.ResponseFor(organ_id=SENDER, document_id=f"bench-{backbone_id}"),
            )
            events.append(
                Event(
                    kind=Kind.STATUS,
                    sender=SENDER,
                    recipient=recipient,
                    document_id=f"bench-{backbone_id}",
                    status_code="01",
                    occurred_at=now,
                    package=base64.b64encode(edxml.build(status)).decode(),
                )
            )
    connection = await aio_pika.connect(amqp)
    channel = await connection.channel()
    exchange = await channel.get_exchange(topology.EVENTS)
    publishing = time.perf_counter()
    for start in range(0, len(events), 500):  # published with confirms, 500 in flight
        await asyncio.gather(
            *(
                exchange.publish(
                    aio_pika.Message(e.body(), message_id=e.event_id, delivery_mode=2),
                    e.routing_key,
                )
                for e in events[start : start + 500]
            )
        )
    published = time.perf_counter() - publishing
    settings = Settings(amqp_url=amqp, database_url=database)
    tracker, tracker_store = tracking.build(settings)
    started = time.perf_counter()
    task = asyncio.create_task(tracker.run())
    while True:
        async with store.sessions() as session:
            recorded = (
                await session.execute(select(func.count()).select_from(EventRow))
            ).scalar_one()
        if recorded >= len(events):
            break
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - started
    tracker.stop()
    await task
    await connection.close()
    await store.close()
    await tracker_store.close()
    return {
        "events": len(events),
        "seconds": elapsed,
        "per_second": len(events) / elapsed,
        "publish_seconds": published,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--documents", type=int, default=2500, help="4 events each")
    args = parser.parse_args()
    node = localnode.LocalNode().start()
    results = {}
    try:
        engines = ["sqlite"] + ([] if postgres_unreachable() else ["postgresql"])
        for engine in engines:
            vhost = f"bench-{engine}"
            from backbone.broker.mgmt import Management

            Management(node.mgmt_url).add_vhost(vhost)
            Management(node.mgmt_url).set_permissions(
                vhost, "guest", configure=".*", write=".*", read=".*"
            )
            amqp = node.amqp_url.rstrip("/") + f"/{vhost}"
            asyncio.run(topology.declare_all(amqp))
            with migrated(engine, Path(tempfile.mkdtemp())) as database:
                results[engine] = asyncio.run(run(amqp, database, args.documents))
    finally:
        node.stop()
    total = args.documents * 4
    print(f"tracker: routed events and statuses 01 (forwarded), {total} events per engine")
    for engine, figures in results.items():
        print(
            f"  {engine:10} {figures['per_second']:8.0f} events/s "
            f"({figures['events']} in {figures['seconds']:.2f} s; publishing took "
            f"{figures['publish_seconds']:.2f} s)"
        )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "tracker.json"
    out.write_text(
        json.dumps(
            {"benchmark": "tracker", "when": datetime.now(UTC).isoformat(), "results": results},
            indent=2,
        )
    )
    print(f"saved {out}")


if __name__ == "__main__":
    main()
