"""A real RabbitMQ for the pipeline tests, and a fresh virtual host and database per test.

The broker is found as DESIGN.md says: BACKBONE_AMQP_URL (with BACKBONE_MGMT_URL); else a
private node started once per session when rabbitmq-server is installed. Without either,
the tests fail in CI (with what to install) and skip elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import pytest
from typer.testing import CliRunner

from backbone import signing
from backbone.broker import access, find_broker, localnode, topology
from backbone.broker.mgmt import Management
from backbone.broker.provisioning import Provisioner, vhost_url
from backbone.cli import app
from backbone.client import AsyncGateway
from backbone.config import Settings, get_settings
from backbone.errors import BrokerNotFound
from backbone.operations import Operations
from backbone.registry import Registry
from backbone.workers.tracker import Tracker
from backbone.workers.unroutable import Unroutable
from backbone.workers.validator import Validator
from backbone.workers.worker import Worker

from ..conftest import SENDER, Signer
from ..databases import migrated
from ..worlds import Received, World
from .helpers import ready_count

PASSWORD = "secret"
WORKERS = "backbone"  # the workers' user in every test's virtual host


@dataclass
class Broker:
    amqp_url: str
    mgmt: Management
    node: localnode.LocalNode | None = None

    def url(self, vhost: str, user: str = "guest", password: str = "guest") -> str:
        return vhost_url(self.amqp_url, vhost, user, password)


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    with contextlib.ExitStack() as stack:
        try:
            amqp, mgmt, node = stack.enter_context(find_broker())
        except BrokerNotFound as exc:  # in CI a missing broker is a failure
            (pytest.fail if os.environ.get("CI") else pytest.skip)(str(exc))
        yield Broker(amqp, Management(mgmt), node)


@dataclass
class Pipeline:
    """One test's world: a virtual host, a database, principals, and a running validator."""

    broker: Broker
    vhost: str
    settings: Settings
    registry: Registry
    validator: Validator
    signers: dict[str, Signer]
    tracker: Tracker
    running: dict[str, contextlib.AsyncExitStack] = field(default_factory=dict)

    async def start(self, worker: Worker) -> None:
        """Run ``worker`` until ``stop`` or the end of the test."""
        stack = contextlib.AsyncExitStack()
        await stack.enter_async_context(worker.running())
        self.running[worker.name] = stack

    async def stop(self, name: str) -> None:
        """Stop the worker called ``name`` (a test that runs it as a process instead)."""
        await self.running.pop(name).aclose()

    def url(self, user: str = "guest") -> str:
        """The test's virtual host as ``user`` (guest: the administrator)."""
        return self.broker.url(self.vhost, user, "guest" if user == "guest" else PASSWORD)

    @property
    def provisioner(self) -> Provisioner:
        return Provisioner(self.broker.mgmt, self.vhost)

    @property
    def operations(self) -> Operations:
        """The operator's workflows on this test's virtual host and registry."""
        return Operations.configured(self.settings, self.registry, actor="tests")

    async def add_agency(self, code: str, name: str | None = None, *, inbox: bool = True) -> None:
        """As `agency add` does (registry, broker user with PASSWORD, its inbox, routes); without
        ``inbox``, only the registry's record: an agency with no user and no queue, which only
        a gateway can serve (or nothing: its copies are undeliverable)."""
        if inbox:
            await self.operations.add_agency(code, name or code, password=PASSWORD)
        else:
            await self.registry.add_agency(code, name or code, principal=False)

    async def add_gateway(self, name: str, patterns: list[str]) -> None:
        """As `gateway add` does: registry, broker user with PASSWORD, queue, routes."""
        await self.operations.add_gateway(name, patterns, password=PASSWORD)

    async def route(self) -> None:
        """Bind every registered agency to the one queue that serves it, as every registry
        command does."""
        await self.operations.route()


@pytest.fixture
def pipeline_database(tmp_path: Path) -> Iterator[str]:
    """The pipeline's database: SQLite; a module may ask for PostgreSQL too."""
    with migrated("sqlite", tmp_path) as url:
        yield url


@pytest.fixture
async def pipeline(
    broker: Broker,
    tmp_path: Path,
    pki: signing.Pki,
    signers: dict[str, Signer],
    pipeline_database: str,
) -> AsyncIterator[Pipeline]:
    vhost = f"test-{uuid.uuid4().hex[:10]}"
    await asyncio.to_thread(broker.mgmt.add_vhost, vhost)
    await asyncio.to_thread(
        broker.mgmt.set_permissions, vhost, "guest", configure=".*", write=".*", read=".*"
    )
    database = pipeline_database
    backbone = pki.issue("000.00.00.B00", tmp_path / "backbone-cert", name="Backbone")
    await asyncio.to_thread(
        Provisioner(broker.mgmt, vhost).ensure, WORKERS, access.workers_grant(), password=PASSWORD
    )
    settings = Settings(
        amqp_url=broker.url(vhost, WORKERS, PASSWORD),  # the workers run as their own user
        mgmt_url=broker.mgmt.url,
        database_url=database,
        trust_bundle=pki.ca_bundle,
        crl_files=pki.crls(),
        registry_ttl=0.0,
        delivery_limit=3,
        backbone_key=backbone.key,
        backbone_cert=backbone.certificate,
    )
    await topology.declare_topology(settings.admin_amqp_url, settings.delivery_limit)
    validator = Validator.from_settings(settings)
    tracker = Tracker.from_settings(settings)
    world = Pipeline(broker, vhost, settings, validator.registry, validator, signers, tracker)
    try:
        for worker in (validator, tracker):
            await world.start(worker)
        yield world
    finally:
        for name in list(world.running):
            await world.stop(name)
        await asyncio.to_thread(broker.mgmt.delete_vhost, vhost)


Invoke = Callable[..., Awaitable[tuple[int, str, str]]]
runner = CliRunner()


@pytest.fixture
def cli(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> Iterator[Invoke]:
    """`backbone ...` on the test's virtual host and database, run in a thread (the
    commands run event loops of their own) while the workers go on."""
    monkeypatch.setenv("BACKBONE_AMQP_URL", pipeline.settings.amqp_url)
    monkeypatch.setenv("BACKBONE_MGMT_URL", pipeline.broker.mgmt.url)
    monkeypatch.setenv("BACKBONE_DATABASE_URL", pipeline.settings.database_url)
    monkeypatch.setenv("BACKBONE_DELIVERY_LIMIT", str(pipeline.settings.delivery_limit))
    get_settings.cache_clear()

    async def invoke(*args: str | Path) -> tuple[int, str, str]:
        result = await asyncio.to_thread(runner.invoke, app, [str(a) for a in args])
        return result.exit_code, result.stdout, result.stderr

    yield invoke
    get_settings.cache_clear()


class RealWorld(World):
    """The workers' world (tests/worlds.py) on the test's virtual host."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.settings = pipeline.settings
        self.registry = pipeline.registry
        self.signers = pipeline.signers
        self.validator = pipeline.validator
        self.tracker = pipeline.tracker

    async def add_agency(self, code: str, *, inbox: bool = True) -> None:
        await self.pipeline.add_agency(code, inbox=inbox)
        await self.pipeline.route()

    async def add_gateway(self, name: str, patterns: list[str]) -> None:
        await self.pipeline.add_gateway(name, patterns)

    async def unroute(self, code: str) -> None:
        bindings = await asyncio.to_thread(
            self.pipeline.broker.mgmt.bindings, self.pipeline.vhost, topology.DELIVER
        )
        connection = await aio_pika.connect(self.pipeline.url())
        try:
            channel = await connection.channel()
            for queue, key in bindings:
                if key == code:
                    await (await channel.get_queue(queue)).unbind(topology.DELIVER, key)
        finally:
            await connection.close()

    def gateway(self, user: str) -> AsyncGateway:
        return AsyncGateway(self.pipeline.url(user), username=user)

    async def submit(
        self,
        body: bytes,
        *,
        user: str = SENDER,
        routing_key: str | None = None,
        user_id: str | None = "same",
        type: str = "edoc",
    ) -> None:
        connection = await aio_pika.connect(self.pipeline.url(user))
        try:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(topology.SUBMIT)
            message = aio_pika.Message(
                body,
                message_id=uuid.uuid4().hex,
                type=type,
                user_id=user if user_id == "same" else user_id,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            )
            await exchange.publish(message, routing_key=routing_key or user)
        finally:
            await connection.close()

    async def received(self, queue: str, count: int) -> list[Received]:
        """Up to ``count`` messages, waiting up to WAIT seconds for them."""
        found: list[Received] = []
        connection = await aio_pika.connect(self.pipeline.url())
        try:
            channel = await connection.channel()
            source = await channel.get_queue(queue)
            async with source.iterator(timeout=WAIT) as messages:
                with contextlib.suppress(TimeoutError):
                    async for message in messages:
                        await message.ack()
                        found.append(
                            Received(
                                message.body,
                                dict(message.headers or {}),
                                message.routing_key or "",
                                message.type,
                            )
                        )
                        if len(found) >= count:
                            break
        finally:
            await connection.close()
        return found

    async def empty(self, *queues: str) -> None:
        for queue in queues:
            assert await ready_count(self.pipeline.url(), queue) == 0, queue

    async def until(self, check: Callable[[], Awaitable[bool]], what: str) -> None:
        deadline = asyncio.get_running_loop().time() + WAIT
        while not await check():
            assert asyncio.get_running_loop().time() < deadline, f"not after {WAIT} s: {what}"
            await asyncio.sleep(0.05)


WAIT = 20.0  # seconds a real-broker world waits for what must happen


@pytest.fixture
async def world(pipeline: Pipeline) -> AsyncIterator[RealWorld]:
    """The workers' world, with the consumer of undeliverable copies running too."""
    await pipeline.start(Unroutable(pipeline.settings, pipeline.validator.signer))
    yield RealWorld(pipeline)
