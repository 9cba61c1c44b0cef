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

import pytest
from typer.testing import CliRunner

from backbone import signing
from backbone.broker import access, localnode, topology
from backbone.broker.mgmt import Management
from backbone.broker.provisioning import Provisioner, vhost_url
from backbone.cli import app
from backbone.config import Settings, get_settings
from backbone.registry import Registry
from backbone.workers.tracker import Tracker
from backbone.workers.validator import Validator
from backbone.workers.worker import Worker

from ..conftest import Signer
from ..databases import migrated

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
    amqp, mgmt = os.environ.get("BACKBONE_AMQP_URL"), os.environ.get("BACKBONE_MGMT_URL")
    if amqp and mgmt:
        yield Broker(amqp, Management(mgmt))
        return
    if not localnode.available():
        message = (
            "no RabbitMQ: set BACKBONE_AMQP_URL and BACKBONE_MGMT_URL, or install "
            "rabbitmq-server (Debian package) so the tests can start a private node"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    node = localnode.LocalNode().start()
    try:
        yield Broker(node.amqp_url, Management(node.mgmt_url), node)
    finally:
        node.stop()


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

    async def add_agency(self, code: str, name: str | None = None, *, inbox: bool = True) -> None:
        """Registry, and with ``inbox`` its broker user (provisioned as `agency add` does)
        and inbox; without, an agency with neither, which only a gateway can serve (or
        nothing: its copies are undeliverable)."""
        await self.registry.add_agency(code, name or code, principal=inbox)
        if inbox:
            await asyncio.to_thread(
                self.provisioner.ensure, code, access.agency_grant(code), password=PASSWORD
            )
            await declare(self.url(), lambda ch: topology.declare_inbox(ch, code))

    async def add_gateway(self, name: str, patterns: list[str]) -> None:
        """Registry, broker user and queue (as `gateway add` does), and the bindings."""
        await self.registry.add_gateway(name, patterns)
        await asyncio.to_thread(
            self.provisioner.ensure, name, access.gateway_grant(name, patterns), password=PASSWORD
        )
        await declare(self.url(), lambda ch: topology.declare_gateway(ch, name, []))
        await self.route()

    async def route(self) -> None:
        """Bind every registered agency to the one queue that serves it, as every registry
        command does (``backbone.cli._broker.route``)."""
        wanted = await self.registry.delivery_queues()
        current = await asyncio.to_thread(self.broker.mgmt.bindings, self.vhost, topology.DELIVER)
        bind, unbind = topology.route_changes(wanted, current)
        await declare(self.url(), lambda ch: topology.apply_routes(ch, bind, unbind))


async def declare(url: str, work: object) -> None:
    import aio_pika

    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        await work(channel)  # type: ignore[operator]
    finally:
        await connection.close()


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
    await topology.declare_all(settings.admin_amqp_url, settings.delivery_limit)
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
