"""``backbone demo``: a ministry, two provinces and a provincial gateway exchange signed
documents through the backbone on a real RabbitMQ, and the story is told as it happens.

The broker is BACKBONE_AMQP_URL with BACKBONE_MGMT_URL (a fresh virtual host in it), or a
private node the demo starts and stops. Everything it creates is removed at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import AMQPError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import edxml, signing
from .broker import find_broker, topology
from .broker.mgmt import Management
from .broker.provisioning import Provisioner, new_password, vhost_url
from .client import AsyncGateway, Delivery
from .config import Settings
from .edxml.factory import File, new_document
from .operations import ForeignUser, Operations
from .store import migrate
from .workers.tracker import Tracker
from .workers.validator import Validator

MINISTRY, NGHE_AN, CAO_BANG = "000.00.00.G22", "000.00.00.H41", "000.00.00.H14"
DISTRICT, COMMUNE = "000.00.15.H41", "001.03.15.H41"
GATEWAY, SERVES = "lgsp-h41", "*.*.15.H41"
UNKNOWN = "000.00.00.H99"
AGENCIES = {
    MINISTRY: "Văn phòng Chính phủ",
    NGHE_AN: "UBND Tỉnh Nghệ An",
    CAO_BANG: "UBND Tỉnh Cao Bằng",
    DISTRICT: "UBND Huyện Nghi Lộc",
    COMMUNE: "UBND Xã Nghi Phong",
    "000.00.00.B00": "Backbone",
}


@dataclass
class Story:
    """What happened to each document, for the closing table."""

    documents: dict[str, dict[str, str]] = field(default_factory=dict)

    def note(self, document_id: str, column: str, text: str) -> None:
        row = self.documents.setdefault(document_id, {})
        row[column] = f"{row[column]}; {text}" if column in row else text


def run(console: Console | None = None) -> None:
    console = console or Console(highlight=False)
    starting = "Starting a private RabbitMQ node for the demo (about 6 seconds)..."
    with find_broker(starting=lambda: console.print(starting)) as (amqp, mgmt, _):
        workdir = Path(tempfile.mkdtemp(prefix="backbone-demo-"))
        management = Management(mgmt)
        vhost = f"demo-{uuid.uuid4().hex[:8]}"
        management.add_vhost(vhost)
        management.set_permissions(
            vhost, management.username, configure=".*", write=".*", read=".*"
        )
        provisioner = Provisioner(management, vhost)
        passwords: dict[str, str] = {}  # of the users the demo made, removed at the end
        try:
            asyncio.run(_story(console, amqp, provisioner, passwords, workdir))
        finally:
            for user in passwords:
                provisioner.revoke(user)
            management.delete_vhost(vhost)
            shutil.rmtree(workdir, ignore_errors=True)


async def _story(
    console: Console,
    amqp: str,
    provisioner: Provisioner,
    passwords: dict[str, str],
    workdir: Path,
) -> None:
    vhost = provisioner.vhost
    console.rule("[bold]backbone demo: signed documents between agencies over RabbitMQ")
    database = f"sqlite:///{workdir / 'backbone.db'}"
    await asyncio.to_thread(migrate.upgrade, database)
    pki = signing.Pki(workdir / "pki")
    pki.init(intermediate=True)
    certs = {
        code: pki.issue(code, workdir / "certs", name=AGENCIES[code])
        for code in (MINISTRY, NGHE_AN, CAO_BANG, "000.00.00.B00")
    }
    backbone_cert = certs["000.00.00.B00"]
    workers = f"{vhost}-workers"  # the backbone's own principal, for this demo only
    passwords[workers] = new_password()
    settings = Settings(
        amqp_url=vhost_url(amqp, vhost, workers, passwords[workers]),
        mgmt_url=provisioner.mgmt.url,
        database_url=database,
        trust_bundle=pki.ca_bundle,
        crl_files=pki.crls(),
        registry_ttl=1.0,
        backbone_key=backbone_cert.key,
        backbone_cert=backbone_cert.certificate,
    )
    validator = Validator.from_settings(settings)
    tracker = Tracker.from_settings(settings)
    operations = Operations.configured(settings, validator.registry, actor="backbone demo")
    await operations.declare()
    await operations.provision_workers()

    console.print(
        "1. The registry: a ministry, two provinces, and Nghệ An's gateway serving "
        f"a district and a commune ({SERVES})"
    )
    for code in (MINISTRY, NGHE_AN, CAO_BANG):  # each as `agency add` does it
        certificate = signing.load_certificates(str(certs[code].certificate))[0]
        password = await _unused(operations, code)
        await operations.add_agency(
            code, AGENCIES[code], certificates=[certificate], password=password
        )
        passwords[code] = password
    await operations.add_agency(DISTRICT, AGENCIES[DISTRICT], principal=False)
    await operations.add_agency(COMMUNE, AGENCIES[COMMUNE], principal=False)
    password = await _unused(operations, GATEWAY)
    await operations.add_gateway(GATEWAY, [SERVES], password=password)
    passwords[GATEWAY] = password

    running = contextlib.AsyncExitStack()
    for worker in (validator, tracker):
        await running.enter_async_context(worker.running())
    console.print(
        "2. The validator (format, signature, sender, recipients, duplicates) and the "
        f"tracker (every document's lifecycle) are running as {workers!r}, the only user "
        "that may publish deliveries; each agency's user may publish only as itself and "
        "read only its own inbox"
    )

    def url(user: str) -> str:
        return vhost_url(amqp, vhost, user, passwords[user])

    for attempt, refusal in (
        ("Cao Bằng reading Nghệ An's inbox", _read(url(CAO_BANG), topology.inbox(NGHE_AN))),
        ("Cao Bằng publishing as the ministry", _publish_as(url(CAO_BANG), MINISTRY, CAO_BANG)),
    ):
        console.print(f"   {attempt}: [red]{escape(await refusal)}[/red]")

    story = Story()

    key = signing.load_private_key(str(certs[MINISTRY].key))
    chain = signing.load_certificates(str(certs[MINISTRY].certificate))
    letter = File("cong-van-7816.pdf", b"%PDF-1.7 demo document\n" * 400, "application/pdf")
    sends = [
        ("to two provinces", [NGHE_AN, CAO_BANG], None),
        ("through the gateway", [DISTRICT, COMMUNE], None),
        ("forged in transit", [NGHE_AN], "forge"),
        ("to an unknown agency", [UNKNOWN], None),
    ]
    sender = AsyncGateway(url(MINISTRY), username=MINISTRY, key=key, certificates=chain)
    async with sender as ministry:
        for number, (label, recipients, trick) in enumerate(sends, start=7816):
            package = new_document(
                sender=MINISTRY,
                recipients=recipients,
                number=str(number),
                notation="VPCP-TTĐT",
                files=[letter],
                subject=f"V/v kết nối, liên thông phần mềm quản lý văn bản ({label})",
            )
            signed = signing.sign(package, key, chain)
            if trick == "forge":
                signed = signed.replace("kết nối".encode(), "kết n0i".encode(), 1)
            await ministry.send(signed)
            story.note(_short(package.document_id), "sent", f"{label} → {', '.join(recipients)}")
            console.print(f"3. The ministry sends {package.document_id!r} {label}")

    await asyncio.sleep(1.0)
    for code in (NGHE_AN, CAO_BANG):
        agency_key = signing.load_private_key(str(certs[code].key))
        agency_chain = signing.load_certificates(str(certs[code].certificate))
        receiver = AsyncGateway(url(code), username=code, key=agency_key, certificates=agency_chain)
        async with receiver as inbox:
            async for delivery in inbox.receive(topology.inbox(code), timeout=2):
                await delivery.ack()
                await inbox.send_status(delivery, "03", "Đã tiếp nhận")
                story.note(_short(delivery.package.document_id), "received", f"{code} (01, 03)")
                console.print(
                    f"4. {AGENCIES[code]} receives {delivery.package.document_id!r}, "
                    "answers 01 (arrived) then 03 (registered)"
                )
    async with AsyncGateway(url(GATEWAY), username=GATEWAY) as gateway:
        async for delivery in gateway.receive(topology.gateway_queue(GATEWAY), timeout=2):
            await delivery.ack()
            story.note(
                _short(delivery.package.document_id),
                "received",
                f"{delivery.recipient} via {GATEWAY} (01)",
            )
            console.print(
                f"5. The gateway {GATEWAY} receives {delivery.package.document_id!r} for "
                f"{AGENCIES[delivery.recipient]} and answers 01 on its behalf"
            )

    await asyncio.sleep(1.5)
    async with AsyncGateway(url(MINISTRY), username=MINISTRY) as ministry:
        async for delivery in ministry.receive(topology.inbox(MINISTRY), timeout=2):
            await delivery.ack()
            _tell(console, story, delivery)

    table = Table("document", "sent", "received by", "back at the ministry", title="What happened")
    for document_id, row in story.documents.items():
        table.add_row(
            document_id, row.get("sent", ""), row.get("received", "—"), row.get("back", "")
        )
    console.print(table)
    await running.aclose()
    console.rule("every document routed or refused with a reason; nothing lost")


async def _unused(operations: Operations, user: str) -> str:
    """A password for this run's broker user ``user``. A broker given by BACKBONE_AMQP_URL
    may have such a user in use (with rights somewhere): the demo leaves it alone; one in
    use nowhere (left by an earlier run) it takes."""
    if await asyncio.to_thread(operations.mgmt.user_permissions, user):
        raise ForeignUser(
            f"the broker has a user {user!r} in use; run the demo on a node of its own "
            "(unset BACKBONE_AMQP_URL and BACKBONE_MGMT_URL)"
        )
    return new_password()


async def _read(url: str, queue: str) -> str:
    """Try to consume ``queue``; what the broker said."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        source = await channel.get_queue(queue, ensure=False)
        await source.consume(_ignore)
    except AMQPError as exc:
        return f"refused by the broker ({_reason(exc)})"
    finally:
        await connection.close()
    return "allowed (this should not happen)"


async def _publish_as(url: str, routing_key: str, user: str) -> str:
    """Try to submit under ``routing_key``; what the broker said."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(topology.SUBMIT, ensure=False)
        await exchange.publish(aio_pika.Message(b"<forged/>", user_id=user), routing_key)
    except AMQPError as exc:
        return f"refused by the broker ({_reason(exc)})"
    finally:
        await connection.close()
    return "allowed (this should not happen)"


async def _ignore(message: AbstractIncomingMessage) -> None:
    await message.reject(requeue=True)


def _reason(exc: AMQPError) -> str:
    """``ACCESS_REFUSED - access to queue 'x' ... refused for user 'y'`` of an error."""
    text = str(exc.args[1] if len(exc.args) > 1 else exc)
    return text.split(" - ")[0] if " - " in text else text


def _short(document_id: str | None) -> str:
    """``7816/VPCP-TTĐT`` of ``000.00.00.G22,2026/11/23,7816/VPCP-TTĐT``: enough for a table."""
    return (document_id or "").rsplit(",", 1)[-1]


def _tell(console: Console, story: Story, delivery: Delivery) -> None:
    package = delivery.package
    assert isinstance(package, edxml.StatusPackage)
    about = _short(package.document_id)
    if delivery.rejection:
        reason = f"refused at check {delivery.rejection['check']}: {delivery.rejection['code']}"
        story.note(about, "back", reason)
        console.print(f"6. The ministry learns {about!r} was [red]{escape(reason)}[/red]")
        return
    code = package.header.status_code
    story.note(about, "back", f"{code} from {package.sender}")
    console.print(
        f"6. The ministry learns {package.sender} reported {code} "
        f"({edxml.STATUS_CODES.get(code, '?')}) on {about!r}"
    )
