"""The tracker's test bodies (tests/bodies/lifecycle.py) on a real RabbitMQ, on both
database engines; and what only a real broker shows: a status overtaking its routing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from backbone.broker import topology
from backbone.workers.tracker import Tracker

from ..bodies.lifecycle import *  # noqa: F403
from ..bodies.lifecycle import A, current
from ..conftest import SENDER, make_document
from ..databases import migrated, postgres_unreachable
from .conftest import RealWorld
from .helpers import ready_count, wait_for

pytestmark = pytest.mark.pipeline


@pytest.fixture(params=["sqlite", "postgresql"])
def pipeline_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The lifecycle runs on both engines."""
    if request.param == "postgresql" and (unreachable := postgres_unreachable()):
        pytest.skip(unreachable)
    with migrated(request.param, tmp_path) as url:
        yield url


async def test_a_status_before_its_routing_is_recorded_waits_for_it(world: RealWorld) -> None:
    await world.pipeline.stop("tracker")  # held back while the status overtakes the routing
    for code in (SENDER, A):
        await world.add_agency(code)
    package = make_document(recipients=[A], document_id=f"early-{uuid.uuid4().hex[:8]}")
    await world.submit(world.signers["G22"].sign(package))
    await world.received(topology.inbox(A), 1)  # routed: its events wait for the tracker
    await world.report(package, A, "01")
    url = world.pipeline.url()

    async def queued() -> bool:  # the accepted document, the status: waiting for the tracker
        return await ready_count(url, topology.TRACKER) >= 2

    await wait_for(queued, 20)
    # the tracker comes back: routing and status arrive together, the status may come first
    world.tracker = Tracker.from_settings(world.settings)
    await world.pipeline.start(world.tracker)
    await world.recorded(package, 1)
    assert await current(world, package) == "01"
    assert await world.events(package.document_id, "anomaly") == []
