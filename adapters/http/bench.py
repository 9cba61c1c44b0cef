"""``backbone bench http``: documents through the HTTP adapter, from one DMS to another.

On a private node (or the broker given), with a validator and the tracker running as
``backbone run`` runs them and the adapter as ``backbone adapter http`` runs it: the
sending DMS posts pre-signed packages (``concurrency`` requests at a time) to
``/v1/documents``; each is validated, routed to the adapter's gateway queue and committed
to the recipient's mailbox; then the receiving DMS takes them all (peek, download, ack,
``concurrency`` at a time). Reported: sends and downloads per second, the HTTP answer's
latency, and the latency from the send to the package in the recipient's mailbox (the
mailbox row's time; both clocks are this machine's).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from backbone import loop, signing
from backbone.benchmark import Progress, _procs, _report, _silent, _world
from backbone.broker import find_broker
from backbone.broker.mgmt import Management
from backbone.broker.provisioning import new_password
from backbone.operations import Operations
from backbone.registry import Registry
from backbone.store import Store, migrate
from backbone.store.models import MailboxMessage

from . import credentials
from .credentials import Vault
from .signing import HmacAuth

GATEWAY = "bench-http"
SENDER, RECIPIENT = "000.00.00.H51", "000.00.00.H52"
START_TIMEOUT = 60.0
ARRIVAL_TIMEOUT = 300.0


@dataclass
class Options:
    documents: int = 1000
    concurrency: int = 16
    size: int = 8 * 1024
    results: Path = _report.RESULTS
    amqp_url: str | None = None
    mgmt_url: str | None = None


def run(options: Options, progress: Progress = _silent) -> dict[str, Any]:
    """The benchmark; returns the report, saved as http-adapter.json under ``results``."""
    workdir = Path(tempfile.mkdtemp(prefix="backbone-bench-http-"))
    try:
        with find_broker(
            options.amqp_url,
            options.mgmt_url,
            environment=False,
            otherwise="give --amqp-url and --mgmt-url",
            starting=lambda: progress("starting a private RabbitMQ node", None),
        ) as (amqp, mgmt, _):
            world = _world.World(amqp, Management(mgmt), workdir, [SENDER], [RECIPIENT])
            progress("creating agencies, the adapter's gateway, certificates", None)
            asyncio.run(world.create())
            try:
                with migrate.fresh("sqlite", workdir, "", "backbone_bench_http") as database:
                    password = new_password()
                    asyncio.run(_register(world, database, password))
                    attachment = _world.attachment_for(world, options.size)
                    jobs: list[tuple[str, tuple[str, ...], str]] = [
                        (SENDER, (RECIPIENT,), str(n)) for n in range(options.documents)
                    ]
                    advance = progress(f"signing {len(jobs)} packages", len(jobs))
                    bodies = _world.sign_all(world, jobs, attachment, advance)
                    report = loop.run(
                        _measure(options, world, database, password, bodies, workdir, progress)
                    )
            finally:
                world.destroy()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report["saved"] = str(_report.save(report, options.results, "http-adapter"))
    return report


async def _register(world: _world.World, database: str, password: str) -> None:
    """The topology, the workers' user, both agencies (no broker user of their own: the
    adapter's gateway serves them) and the gateway, as an operator makes them."""
    store = Store(database)
    try:
        operations = Operations.configured(
            world.settings(database), Registry(store), actor="backbone bench http"
        )
        await operations.declare()
        await operations.provision_workers()
        for code in world.agencies:
            certificate = signing.load_certificates(str(world.issued[code].certificate))[0]
            await operations.add_agency(code, code, certificates=[certificate], principal=False)
        await operations.add_gateway(GATEWAY, world.agencies, password=password)
    finally:
        await store.close()


async def _measure(
    options: Options,
    world: _world.World,
    database: str,
    password: str,
    bodies: list[bytes],
    workdir: Path,
    progress: Progress,
) -> dict[str, Any]:
    settings = world.settings(database)
    workers = _procs.Workers(settings, 1, 64, workdir / "logs")
    workers.start()
    vault_key = Vault.new_key()
    adapter, base_url = await _start_adapter(settings, vault_key, password, workdir / "logs")
    try:
        sender, recipient = await _credentials(database, vault_key)
        send = await _send_all(base_url, sender, bodies, options.concurrency, progress)
        arrivals = await _arrivals(database, len(bodies), progress)
        download = await _download_all(
            base_url, recipient, len(bodies), options.concurrency, progress
        )
    finally:
        adapter.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            adapter.wait(timeout=60)
        workers.stop()
    mailbox_ms = [(arrivals[document] - sent) * 1000 for document, sent in send["started"].items()]
    return {
        "benchmark": "http-adapter",
        "when": datetime.now(UTC).isoformat(),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
        "package_bytes": len(bodies[0]),
        "sends_per_second": send["rate"],
        "send_answer_ms": _report.percentiles(send["answer_ms"]),
        "send_to_mailbox_ms": _report.percentiles(mailbox_ms),
        "downloads_per_second": download["rate"],
        "download_ms": _report.percentiles(download["ms"]),
    }


async def _start_adapter(
    settings: Any, vault_key: str, password: str, logs: Path
) -> tuple[subprocess.Popen[bytes], str]:
    env = _procs.environment(settings)
    env.update({"BACKBONE_ADAPTER_KEY": vault_key, "BACKBONE_ADAPTER_PASSWORD": password})
    port = _free_port()
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / "adapter.log").open("ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "backbone",
                "adapter",
                "http",
                "--gateway",
                GATEWAY,
                "--port",
                str(port),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    async with httpx.AsyncClient(base_url=base_url) as client:
        while time.monotonic() < deadline and process.poll() is None:
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/health")).status_code == 200:
                    return process, base_url
            await asyncio.sleep(0.2)
    process.kill()
    raise RuntimeError(f"the adapter did not start (see {logs / 'adapter.log'})")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _credentials(database: str, vault_key: str) -> tuple[HmacAuth, HmacAuth]:
    store = Store(database)
    try:
        async with store.transaction() as session:
            made = [
                await credentials.add(session, Vault(vault_key), [code])
                for code in (SENDER, RECIPIENT)
            ]
    finally:
        await store.close()
    return HmacAuth(*made[0]), HmacAuth(*made[1])


async def _send_all(
    base_url: str, auth: HmacAuth, bodies: list[bytes], concurrency: int, progress: Progress
) -> dict[str, Any]:
    advance = progress(f"sending {len(bodies)} documents over HTTP", len(bodies))
    todo: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        todo.put_nowait(body)
    started: dict[str, float] = {}
    answer_ms: list[float] = []

    async def sender(client: httpx.AsyncClient) -> None:
        while not todo.empty():
            body = todo.get_nowait()
            began, clock = time.time(), time.perf_counter()
            answer = await client.post(
                "/v1/documents", content=body, headers={"content-type": "application/xml"}
            )
            if answer.status_code != 202:
                raise RuntimeError(f"a send was answered {answer.status_code}: {answer.text}")
            answer_ms.append((time.perf_counter() - clock) * 1000)
            started[answer.json()["document_id"]] = began
            advance(1)

    async with httpx.AsyncClient(base_url=base_url, auth=auth, timeout=60) as client:
        clock = time.perf_counter()
        await asyncio.gather(*(sender(client) for _ in range(concurrency)))
        seconds = time.perf_counter() - clock
    return {"rate": len(bodies) / seconds, "answer_ms": answer_ms, "started": started}


async def _arrivals(database: str, count: int, progress: Progress) -> dict[str, float]:
    """When each document reached the recipient's mailbox (Unix seconds)."""
    advance = progress("waiting for the packages in the recipient's mailbox", count)
    store = Store(database)
    seen = 0
    deadline = time.monotonic() + ARRIVAL_TIMEOUT
    try:
        while True:
            async with store.sessions() as session:
                rows = (
                    await session.execute(
                        select(MailboxMessage.document_id, MailboxMessage.received_at).where(
                            MailboxMessage.recipient == RECIPIENT, MailboxMessage.kind == "edoc"
                        )
                    )
                ).all()
            advance(len(rows) - seen)
            seen = len(rows)
            if seen >= count:
                return {str(d): _epoch(at) for d, at in rows}
            if time.monotonic() > deadline:
                raise RuntimeError(f"{count - seen} documents never reached the mailbox")
            await asyncio.sleep(0.2)
    finally:
        await store.close()


def _epoch(moment: datetime) -> float:
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


async def _download_all(
    base_url: str, auth: HmacAuth, count: int, concurrency: int, progress: Progress
) -> dict[str, Any]:
    advance = progress(f"receiving {count} documents over HTTP", count)
    taken: list[float] = []

    async def receiver(client: httpx.AsyncClient) -> None:
        while len(taken) < count:
            clock = time.perf_counter()
            peeked = await client.post("/v1/inbox/peek", params={"kind": "edoc"})
            if peeked.status_code == 204:
                return
            message = peeked.json()["message"]["id"]
            package = await client.get(f"/v1/inbox/{message}/package")
            await client.post(f"/v1/inbox/{message}/ack", json={"result": "done"})
            if package.status_code == 200:
                taken.append((time.perf_counter() - clock) * 1000)
                advance(1)

    async with httpx.AsyncClient(base_url=base_url, auth=auth, timeout=60) as client:
        clock = time.perf_counter()
        await asyncio.gather(*(receiver(client) for _ in range(concurrency)))
        seconds = time.perf_counter() - clock
    return {"rate": len(taken) / seconds, "ms": taken}


def render(report: dict[str, Any], echo: Callable[[str], None]) -> None:
    def three(figures: dict[str, float]) -> str:
        return f"p50 {figures['p50']:.0f} ms, p99 {figures['p99']:.0f} ms"

    echo(f"package {report['package_bytes']:,} B, {report['options']['documents']} documents")
    answer = three(report["send_answer_ms"])
    echo(f"sends      {report['sends_per_second']:.0f}/s   (answer {answer})")
    echo(f"to mailbox {three(report['send_to_mailbox_ms'])}")
    echo(
        f"downloads  {report['downloads_per_second']:.0f}/s   "
        f"(peek, package, ack: {three(report['download_ms'])})"
    )


__all__ = ["Options", "render", "run"]
