"""The workers' world on the in-memory broker (see tests/worlds.py)."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from backbone import signing
from backbone.broker import topology
from backbone.broker.transport import Outgoing
from backbone.client import AsyncGateway
from backbone.config import Settings
from backbone.testing import MemoryBroker
from backbone.workers.tracker import Tracker
from backbone.workers.unroutable import Unroutable
from backbone.workers.validator import Validator

from ..conftest import SENDER, Signer
from ..databases import migrated
from ..worlds import Received, World

WORKERS = "backbone"


class MemoryWorld(World):
    def __init__(self, broker: MemoryBroker, settings: Settings, signers: dict[str, Signer]):
        self.broker = broker
        self.settings = settings
        self.signers = signers
        transport = broker.transport(WORKERS)
        self.validator = Validator.from_settings(settings, transport=transport)
        self.tracker = Tracker.from_settings(settings, transport=transport)
        # in memory the routing of a document is recorded before any status about it can
        # arrive (the bodies wait for it): what the tracker waits for never comes late
        self.tracker.deferrals = (0.01,) * len(self.tracker.deferrals)
        self.unroutable = Unroutable(settings, self.validator.signer, transport=transport)
        self.registry = self.validator.registry

    async def add_agency(self, code: str, *, inbox: bool = True) -> None:
        await self.registry.add_agency(code, code, principal=inbox)
        await self._route()

    async def add_gateway(self, name: str, patterns: list[str]) -> None:
        await self.registry.add_gateway(name, patterns)
        self.broker.declare_queue(topology.gateway_queue(name))
        await self._route()

    async def _route(self) -> None:
        """Each agency bound to its one serving queue (``topology.route_changes``)."""
        wanted = await self.registry.delivery_queues()
        bind, unbind = topology.route_changes(wanted, self.broker.bindings[topology.DELIVER])
        for queue, key in bind:
            self.broker.declare_queue(queue)
            self.broker.bind(queue, topology.DELIVER, key)
        for queue, key in unbind:
            self.broker.unbind(queue, topology.DELIVER, key)

    async def unroute(self, code: str) -> None:
        for queue, key in list(self.broker.bindings[topology.DELIVER]):
            if key == code:
                self.broker.unbind(queue, topology.DELIVER, key)

    def gateway(self, user: str) -> AsyncGateway:
        return AsyncGateway(username=user, transport=self.broker.transport(user))

    async def submit(
        self,
        body: bytes,
        *,
        user: str = SENDER,
        routing_key: str | None = None,
        user_id: str | None = "same",
        type: str = "edoc",
    ) -> None:
        async with self.broker.transport(user).connect() as connection:
            await connection.publish(
                topology.SUBMIT,
                Outgoing(
                    body,
                    routing_key or user,
                    message_id=uuid.uuid4().hex,
                    type=type,
                    user_id=user if user_id == "same" else user_id,
                ),
            )

    async def received(self, queue: str, count: int) -> list[Received]:
        await self.broker.join()
        return [Received(m.body, m.headers, m.routing_key, m.type) for m in self.broker.take(queue)]

    async def empty(self, *queues: str) -> None:
        await self.broker.join()
        for queue in queues:
            assert self.broker.depth(queue) == 0, queue

    async def settled(self, queue: str) -> None:
        """Nothing waits in ``queue`` and nothing is held unacked anywhere."""
        await self.broker.join()  # every delivery settled, or it raises saying what is held
        assert self.broker.depth(queue) == 0, queue

    async def until(self, check: Callable[[], Awaitable[bool]], what: str) -> None:
        await self.broker.join()
        assert await check(), what


@pytest.fixture(scope="session")
def template_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One migrated SQLite file, copied for each test (migrating costs more than copying)."""
    directory = tmp_path_factory.mktemp("template-db")
    with migrated("sqlite", directory) as url:
        yield Path(url.split("///", 1)[1])


@pytest.fixture(scope="session")
def backbone_certificate(
    pki: signing.Pki, tmp_path_factory: pytest.TempPathFactory
) -> signing.pki.Issued:
    return pki.issue("000.00.00.B00", tmp_path_factory.mktemp("backbone"), name="Backbone")


@pytest.fixture
async def world(
    tmp_path: Path,
    pki: signing.Pki,
    signers: dict[str, Signer],
    template_database: Path,
    backbone_certificate: signing.pki.Issued,
) -> AsyncIterator[MemoryWorld]:
    database = tmp_path / "backbone.db"
    shutil.copy(template_database, database)
    settings = Settings(
        database_url=f"sqlite:///{database}",
        trust_bundle=pki.ca_bundle,
        crl_files=pki.crls(),
        registry_ttl=0.0,
        delivery_limit=3,
        backbone_key=backbone_certificate.key,
        backbone_cert=backbone_certificate.certificate,
    )
    memory = MemoryWorld(MemoryBroker(settings.delivery_limit), settings, signers)
    async with AsyncExitStack() as running:
        for worker in (memory.validator, memory.tracker, memory.unroutable):
            await running.enter_async_context(worker.running())
        yield memory
