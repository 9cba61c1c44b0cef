"""What a run needs: a broker and a virtual host, a PKI, agencies with their broker users and
certificates, a fresh database per measured configuration, and the signed packages."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aio_pika

from .. import signing
from ..broker import topology
from ..broker.mgmt import Management
from ..broker.provisioning import Provisioner, new_password, vhost_url
from ..config import Settings
from ..edxml.factory import File, new_document
from ..operations import Operations
from ..registry import Registry
from ..signing.pki import Issued, KeyType
from ..store import Store

WORKERS = "bench-workers"
BACKBONE = "000.00.00.B00"
NOTATION = "BENCH"


def senders(count: int) -> list[str]:
    return [f"000.00.00.G{10 + n:02d}" for n in range(count)]


def recipients(count: int) -> list[str]:
    return [f"000.00.00.H{10 + n:02d}" for n in range(count)]


@dataclass
class World:
    """One virtual host with the backbone's topology, the workers' user and every agency."""

    amqp: str  # the broker as its administrator (any vhost)
    mgmt: Management
    workdir: Path
    senders: list[str]
    recipients: list[str]
    key_type: KeyType = "rsa"
    vhost: str = field(default_factory=lambda: f"bench-{uuid.uuid4().hex[:8]}")
    passwords: dict[str, str] = field(default_factory=dict)
    issued: dict[str, Issued] = field(default_factory=dict)

    @property
    def agencies(self) -> list[str]:
        return self.senders + self.recipients

    @property
    def pki(self) -> signing.Pki:
        return signing.Pki(self.workdir / "pki")

    def url(self, user: str | None = None) -> str:
        """The virtual host as ``user``, or as the administrator."""
        if user is None:
            parts = urlsplit(self.amqp)
            return vhost_url(
                self.amqp, self.vhost, parts.username or "guest", parts.password or "guest"
            )
        return vhost_url(self.amqp, self.vhost, user, self.passwords[user])

    async def create(self) -> None:
        """The virtual host, every user's password and the PKI; the broker's side of the
        agencies comes with the registry of each configuration (``register``)."""
        await asyncio.to_thread(self._create_sync)

    def _create_sync(self) -> None:
        self.mgmt.add_vhost(self.vhost)
        # the administrator of ``amqp`` measures and purges, the management API's provisions
        for admin in {urlsplit(self.amqp).username or "guest", self.mgmt.username}:
            self.mgmt.set_permissions(self.vhost, admin, configure=".*", write=".*", read=".*")
        for user in [WORKERS, *self.agencies]:
            self.passwords[user] = new_password()
        pki = self.pki
        pki.init(intermediate=True, key_type=self.key_type)
        for code in [*self.agencies, BACKBONE]:
            self.issued[code] = pki.issue(
                code, self.workdir / "certs", name=code, key_type=self.key_type
            )

    def destroy(self) -> None:
        provisioner = Provisioner(self.mgmt, self.vhost)
        for user in self.passwords:
            provisioner.revoke(user)
        self.mgmt.delete_vhost(self.vhost)

    async def purge_inboxes(self) -> None:
        connection = await aio_pika.connect(self.url())
        async with connection:
            channel = await connection.channel()
            for code in self.agencies:
                queue = await channel.get_queue(topology.inbox(code), ensure=False)
                await queue.purge()

    def settings(self, database_url: str) -> Settings:
        backbone = self.issued[BACKBONE]
        return Settings(
            amqp_url=self.url(WORKERS),
            mgmt_url=self.mgmt.url,
            database_url=database_url,
            trust_bundle=self.pki.ca_bundle,
            crl_files=self.pki.crls(),
            backbone_key=backbone.key,
            backbone_cert=backbone.certificate,
        )

    async def register(self, database_url: str) -> None:
        """The topology, the workers' user, and the agencies with their certificates, broker
        users and inboxes, as an operator makes them (``backbone.operations``), in a fresh
        database. The broker's side is made by the first configuration, found in line by
        the next ones."""
        store = Store(database_url)
        try:
            settings = self.settings(database_url)
            operations = Operations.configured(settings, Registry(store), actor="backbone bench")
            await operations.declare()
            await operations.provision_workers()
            for code in self.agencies:
                certificate = signing.load_certificates(str(self.issued[code].certificate))[0]
                await operations.add_agency(
                    code, code, certificates=[certificate], password=self.passwords[code]
                )
        finally:
            await store.close()


# --- the packages ----------------------------------------------------------------------------

_signers: dict[str, tuple[Any, list[Any]]] = {}
_attachment = b""


def _init_signer(issued: dict[str, tuple[str, str]], attachment_size: int) -> None:
    global _attachment
    for code, (key, certificate) in issued.items():
        _signers[code] = (
            signing.load_private_key(key),
            signing.load_certificates(certificate),
        )
    _attachment = os.urandom(attachment_size)


def _signed(job: tuple[str, tuple[str, ...], str]) -> bytes:
    sender, to, number = job
    package = new_document(
        sender=sender,
        recipients=list(to),
        subject=f"V/v benchmark document {number}",
        number=number,
        notation=NOTATION,
        files=[File("van-ban.pdf", _attachment, "application/pdf")],
        promulgated=date.today(),
    )
    return signing.sign(package, *_signers[sender])


def attachment_for(world: World, size: int) -> int:
    """The attachment size that makes a signed package about ``size`` bytes (base64 grows
    it by 4/3; the envelope and signature are the rest)."""
    issued = {c: (str(i.key), str(i.certificate)) for c, i in world.issued.items()}
    _init_signer(issued, 0)
    job = (world.senders[0], (world.recipients[0],), "1")
    empty = len(_signed(job))
    return max(1, (size - empty) * 3 // 4)


def sign_all(
    world: World,
    jobs: list[tuple[str, tuple[str, ...], str]],
    attachment_size: int,
    advance: Callable[[int], None],
) -> list[bytes]:
    """Every job signed by its sender, on every core (signing is the senders' cost, paid
    before the clock starts)."""
    issued = {c: (str(i.key), str(i.certificate)) for c, i in world.issued.items()}
    out: list[bytes] = []
    with ProcessPoolExecutor(
        max_workers=os.cpu_count() or 1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_signer,
        initargs=(issued, attachment_size),
    ) as pool:
        for body in pool.map(_signed, jobs, chunksize=64):
            out.append(body)
            advance(1)
    return out
