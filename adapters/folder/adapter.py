"""The folder adapter: a system that can only write and read files exchanges documents
through the backbone, with nothing lost and nothing doubled.

    root/outbox/       the system drops .edxml files to send (complete ones only: written
                       under a name starting with "." or ending in .tmp/.part, then renamed,
                       or unchanged for ``settle`` seconds)
    root/sent/         each sent file, beside its .receipt.json
    root/failed/       each file refused before sending, beside its .error.json
    root/rejected/     a status 02 about a sent document, named after the file that sent it
    root/inbox/<doc>/  each received document: package.edxml (byte for byte), its
                       attachments under safe names, meta.json
    root/statuses/     every status about the agency's documents, one file each
    root/status-out/   the system drops {"document", "to", "code", "description"} JSON
    root/status-sent/  each status JSON sent
    root/.state/       what was done (:mod:`.state`)

A file is sent with a message id derived from its bytes, and recorded, then moved: a
crash between any two steps sends the same submission again at most, which the backbone
routes with the same copy ids, and the receiving adapter writes a copy once (its id is
recorded with its folder). A received document is written to a temporary folder, fsynced,
renamed, recorded, answered 01, then acked; a folder that cannot be written is retried with
back-off, the delivery held unacked meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import mimetypes
import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import watchfiles
from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel, Field, ValidationError

from backbone import edxml, signing
from backbone.client import AsyncGateway, Delivery, SendError
from backbone.edxml.factory import File
from backbone.errors import BrokerError, PackageError
from backbone.files import sync_folder, write_durably
from backbone.logs import get_logger
from backbone.safe import derived_id, printable

from ..described import Described
from .names import document_folder, safe_name
from .state import State

log = get_logger("backbone.adapter.folder")
logging.getLogger("watchfiles").setLevel(logging.WARNING)  # each change is no news
FOLDERS = ("outbox", "sent", "failed", "rejected", "inbox", "statuses", "status-out", "status-sent")
TEMPORARY = (".tmp", ".part", ".partial", ".crdownload")
OCTETS = "application/octet-stream"
WRITE_PAUSES = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)  # a folder that cannot be written


class Outboxed(Described):
    """A document described in JSON in outbox/, its files in a folder of outbox/."""

    files: list[str] = Field(default_factory=list, max_length=100, description="under outbox/")


class StatusOrder(BaseModel):
    """A status the system asks to send, about a document it received."""

    document: str = Field(min_length=1, max_length=255, description="its DocumentId")
    to: str = Field(min_length=13, max_length=13, description="its sender")
    code: str = Field(pattern=r"^0[1-6]$")
    description: str | None = Field(default=None, max_length=2000)


@dataclass
class Layout:
    root: Path

    def __getitem__(self, name: str) -> Path:
        assert name in FOLDERS
        return self.root / name

    @property
    def state(self) -> Path:
        return self.root / ".state" / "state.sqlite"

    def create(self) -> None:
        for name in FOLDERS:
            self[name].mkdir(parents=True, exist_ok=True)


class Metrics:
    """The adapter's metrics (served by ``--metrics-port``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.files = Counter(
            "backbone_adapter_folder_files",
            "Dropped files taken, by folder (outbox, status-out) and outcome (sent, failed)",
            ["folder", "outcome"],
            registry=self.registry,
        )
        self.received = Counter(
            "backbone_adapter_folder_received",
            "Deliveries written, by kind (edoc, status)",
            ["kind"],
            registry=self.registry,
        )
        self.write_failures = Counter(
            "backbone_adapter_folder_write_failures",
            "Writes of what arrived that failed and were tried again",
            registry=self.registry,
        )


@dataclass
class _Seen:
    """A file's size and time when first seen so, and since when (the stability rule)."""

    stamp: tuple[int, int]
    since: float


@dataclass
class FolderAdapter:
    """One principal's folders: ``gateway`` is connected (its ``auto_arrived`` off: 01 is
    sent once a document is written), ``queue`` the one it receives from."""

    layout: Layout
    gateway: AsyncGateway
    queue: str
    state: State
    settle: float = 2.0
    poll: bool = False
    prefetch: int = 16
    agency: str | None = None  # the one it sends for (--as), None for a gateway's
    metrics: Metrics = field(default_factory=Metrics)
    _seen: dict[Path, _Seen] = field(default_factory=dict)
    _retry_at: dict[Path, float] = field(default_factory=dict)
    _failures: dict[Path, int] = field(default_factory=dict)

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``: send what is dropped, write what arrives."""
        self.layout.create()
        tasks = [
            asyncio.create_task(self._watch(stop)),
            asyncio.create_task(
                self.gateway.serve(self.queue, self._arrived, stop=stop, prefetch=self.prefetch)
            ),
        ]
        log.info("folder adapter ready", root=str(self.layout.root), queue=self.queue)
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # an unexpected failure ends the adapter, with its reason
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    # --- sending --------------------------------------------------------------------------

    async def _watch(self, stop: asyncio.Event) -> None:
        """Scan the drop folders on each change the file system reports (or each poll),
        and at least every half second for files becoming stable."""
        folders = [self.layout["outbox"], self.layout["status-out"]]
        changes = watchfiles.awatch(
            *folders,
            stop_event=stop,
            force_polling=self.poll,
            poll_delay_ms=500,
            debounce=200,
            rust_timeout=500,
            yield_on_timeout=True,
            recursive=False,
        )
        async for _ in changes:
            await self.scan()

    async def scan(self) -> None:
        """Send each complete file once; one that cannot be read or moved now, or that the
        broker did not take, is tried again later (with back-off)."""
        now = asyncio.get_running_loop().time()
        for folder, send in (("outbox", self._send_file), ("status-out", self._send_order)):
            for path in self._ready(self.layout[folder]):
                if self._retry_at.get(path, 0.0) > now:
                    continue
                try:
                    done = await send(path)
                except OSError as exc:
                    log.warning(
                        "cannot take the file now",
                        file=printable(path.name),
                        error=f"{exc.strerror or exc}"[:200],
                    )
                    done = False
                except Exception as exc:  # a bug: this file waits, the others go on
                    log.error(
                        "failed on a file; trying again later",
                        file=printable(path.name),
                        error=repr(exc)[:300],
                        exc_info=True,
                    )
                    done = False
                if done:
                    self._seen.pop(path, None)
                    self._retry_at.pop(path, None)
                    self._failures.pop(path, None)
                else:
                    failures = self._failures[path] = self._failures.get(path, 0) + 1
                    self._retry_at[path] = now + min(30.0, 2.0**failures)

    def _ready(self, folder: Path) -> list[Path]:
        """The complete files of ``folder``, in name order: not hidden or temporary, and
        unchanged for ``settle`` seconds (a file renamed in whole is too, after it)."""
        now = asyncio.get_running_loop().time()
        ready = []
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
        present = {Path(e.path) for e in entries}
        for gone in [p for p in self._seen if p.parent == folder and p not in present]:
            del self._seen[gone]  # taken away by the system before it was complete
        for entry in entries:
            if not entry.is_file(follow_symlinks=False) or entry.name.startswith((".", "~")):
                continue
            if entry.name.lower().endswith(TEMPORARY):
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # taken away meanwhile
                continue
            stamp, path = (info.st_size, info.st_mtime_ns), Path(entry.path)
            seen = self._seen.get(path)
            if seen is None or seen.stamp != stamp:
                self._seen[path] = _Seen(stamp, now)
            elif now - seen.since >= self.settle:
                ready.append(path)
        return ready

    async def _send_file(self, path: Path) -> bool:
        """Sent (or refused into failed/): True; not taken by the broker now: False."""
        data = path.read_bytes()
        sha256 = hashlib.sha256(data).hexdigest()
        sent_before = self.state.sent(sha256)  # before a crash: then only moved now
        message_id = sent_before or derived_id("folder", self.gateway.username, sha256)
        attached: list[Path] = []
        if path.suffix.lower() == ".json":
            built = self._built(path, data, sha256)
            if built is None:
                return True
            data, attached = built
        try:
            package = edxml.parse(data, self.gateway.limits)
        except PackageError as exc:
            issue = exc.issues[0]
            self._failed(path, "outbox", issue.code, issue.path, issue.message)
            return True
        if package.kind != "edoc":
            self._failed(
                path, "outbox", "wrong-folder", None, "a status goes in status-out/ as JSON"
            )
            return True
        if self.agency is not None and package.sender != self.agency:
            why = f"the adapter sends for {self.agency} only (the broker would refuse it)"
            self._failed(path, "outbox", "not-your-agency", "Header/From/OrganId", why)
            return True
        if sent_before is None:
            try:
                await self.gateway.send(data, message_id=message_id)
            except (SendError, BrokerError) as exc:
                log.warning(
                    "not sent; trying again", file=printable(path.name), error=str(exc)[:300]
                )
                return False
            self.state.record_sent(
                sha256, path.name, package.document_id or "", package.sender or "", message_id
            )
        receipt = {
            "file": path.name,
            "document_id": package.document_id,
            "message_id": message_id,
            "sha256": sha256,
            "sent_at": datetime.now(UTC).isoformat(),
        }
        moved = _move(path, self.layout["sent"])
        write_durably(moved.with_name(moved.name + ".receipt.json"), _json(receipt))
        if attached:
            beside = self.layout["sent"] / f"{moved.stem} files"
            beside.mkdir(exist_ok=True)
            for file in attached:
                _move(file, beside)
        self.metrics.files.labels("outbox", "sent").inc()
        log.info(
            "sent",
            file=printable(path.name),
            document_id=printable(package.document_id),
            agency=package.sender,
        )
        return True

    def _built(self, path: Path, data: bytes, sha256: str) -> tuple[bytes, list[Path]] | None:
        """The package a JSON description in outbox/ makes (signed with the agency's key if
        the adapter holds it), and the files it attaches; None: refused into failed/. It is
        kept once built, so that a send retried after a crash sends the same bytes (built
        again, it would be another package under the same DocumentId)."""
        outbox = self.layout["outbox"].resolve()
        try:
            described = Outboxed.model_validate_json(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            self._failed(path, "outbox", "description-invalid", where or None, str(first["msg"]))
            return None
        attached = []
        for index, name in enumerate(described.files):
            file = (outbox / name).resolve()
            if not file.is_relative_to(outbox) or file.parent == outbox or not file.is_file():
                why = "not a file in a folder of outbox/"
                self._failed(path, "outbox", "file-missing", f"files.{index}", f"{name!r}: {why}")
                return None
            attached.append(file)
        kept = self.layout.state.parent / "built" / f"{sha256}.edxml"
        if kept.exists():
            return kept.read_bytes(), attached
        package = described.package(
            [
                File(file.name, file.read_bytes(), mimetypes.guess_type(file.name)[0] or OCTETS)
                for file in attached
            ]
        )
        key, chain = self.gateway.key, self.gateway.certificates
        body = signing.sign(package, key, chain) if key and chain else edxml.build(package)
        kept.parent.mkdir(exist_ok=True)
        write_durably(kept, body)
        return body, attached

    def _failed(self, path: Path, folder: str, code: str, where: str | None, message: str) -> None:
        moved = _move(path, self.layout["failed"])
        self.metrics.files.labels(folder, "failed").inc()
        error = {
            "file": path.name,
            "folder": folder,
            "code": code,
            "path": where,
            "message": message,
        }
        write_durably(moved.with_name(moved.name + ".error.json"), _json(error))
        log.warning("refused", file=printable(path.name), code=code, error=printable(message, 300))

    async def _send_order(self, path: Path) -> bool:
        """A status JSON sent (or refused into failed/): True; not taken now: False."""
        try:
            order = StatusOrder.model_validate_json(path.read_bytes())
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            self._failed(path, "status-out", "status-invalid", where or None, str(first["msg"]))
            return True
        found = self.state.received_folder(order.to, order.document)
        if found is None:
            why = "no document with this DocumentId was received from this sender"
            self._failed(path, "status-out", "not-received", "document", why)
            return True
        folder, recipient = found
        received = (self.layout["inbox"] / folder / "package.edxml").read_bytes()
        package = edxml.parse(received, self.gateway.limits)
        assert isinstance(package, edxml.DocumentPackage)
        try:
            await self.gateway.send_status(
                package, order.code, order.description, reporter=recipient
            )
        except (SendError, BrokerError) as exc:
            log.warning(
                "status not sent; trying again", file=printable(path.name), error=str(exc)[:300]
            )
            return False
        _move(path, self.layout["status-sent"])
        self.metrics.files.labels("status-out", "sent").inc()
        log.info(
            "status sent",
            file=printable(path.name),
            document_id=printable(order.document),
            agency=recipient,
            code=order.code,
        )
        return True

    # --- receiving ------------------------------------------------------------------------

    async def _arrived(self, delivery: Delivery) -> None:
        """Written (retried while the folder cannot be), recorded, then 01; the SDK acks
        when this returns and hands the delivery back if it raises."""
        pauses = iter(WRITE_PAUSES)
        while True:
            try:
                if isinstance(delivery.package, edxml.DocumentPackage):
                    await self._write_document(delivery)
                else:
                    self._write_status(delivery)
                self.metrics.received.labels(delivery.kind).inc()
                return
            except OSError as exc:
                self.metrics.write_failures.inc()
                pause = next(pauses, WRITE_PAUSES[-1])
                log.warning(
                    "cannot write what arrived; trying again",
                    error=f"{exc.strerror or exc}"[:200],
                    document_id=printable(delivery.package.document_id),
                    pause=pause,
                )
                await asyncio.sleep(pause)

    async def _write_document(self, delivery: Delivery) -> None:
        package = delivery.package
        assert isinstance(package, edxml.DocumentPackage)
        copy_id = f"{delivery.backbone_id}:{delivery.recipient}"  # the backbone's, stable
        if self.state.received(copy_id) is None:
            name = document_folder(package.sender, package.document_id, copy_id)
            _write_folder(self.layout["inbox"], name, delivery)
            self.state.record_received(
                copy_id, name, package.sender or "", package.document_id, delivery.recipient
            )
            log.info(
                "received",
                folder=printable(name),
                document_id=printable(package.document_id),
                agency=delivery.recipient,
            )
        await self.gateway.send_status(delivery, "01", "Đã đến")

    def _write_status(self, delivery: Delivery) -> None:
        package = delivery.package
        assert isinstance(package, edxml.StatusPackage)
        header = package.header
        digest = hashlib.sha256(delivery.body).hexdigest()[:16]  # the same status: one file
        name = safe_name(f"{header.from_.organ_id} {header.status_code} {digest}.json")
        body_name = f"{name.removesuffix('.json')}.edxml"
        facts: dict[str, Any] = {
            "received_at": datetime.now(UTC).isoformat(),
            "document_id": package.document_id,
            "reporter": header.from_.organ_id,
            "code": header.status_code,
            "description": header.description,
            "rejection": delivery.rejection,
            "package": body_name,
        }
        statuses = self.layout["statuses"]
        if not (statuses / name).exists():
            write_durably(statuses / body_name, delivery.body)
            write_durably(statuses / name, _json(facts))
        if header.status_code == "02":
            sent = self.state.sent_file(delivery.recipient, package.document_id or "")
            label = safe_name(f"{sent or package.document_id}.rejection.json")
            write_durably(self.layout["rejected"] / label, _json(facts | {"file": sent}))


def _write_folder(inbox: Path, name: str, delivery: Delivery) -> None:
    """The document's folder, whole or not at all: written beside, fsynced, renamed."""
    package = delivery.package
    assert isinstance(package, edxml.DocumentPackage)
    final = inbox / name
    if final.exists():  # written before a crash, not recorded: written again whole
        shutil.rmtree(final)
    work = inbox / f".incoming {name}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    files: list[dict[str, Any]] = []
    taken = ["package.edxml", "meta.json"]
    for attachment in package.attachments:
        safe = safe_name(attachment.attachment_name, taken)
        taken.append(safe)
        write_durably(work / safe, attachment.data)
        files.append(
            {
                "name": attachment.attachment_name,
                "file": safe,
                "content_id": attachment.content_id,
                "content_type": attachment.content_type,
                "size": len(attachment.data),
            }
        )
    write_durably(work / "package.edxml", delivery.body)
    meta = {
        "document_id": package.document_id,
        "sender": package.sender,
        "recipient": delivery.recipient,
        "backbone_id": delivery.backbone_id,
        "subject": package.header.subject,
        "received_at": datetime.now(UTC).isoformat(),
        "attachments": files,
    }
    write_durably(work / "meta.json", _json(meta))
    os.replace(work, final)
    sync_folder(inbox)


def _move(path: Path, folder: Path) -> Path:
    """``path`` into ``folder`` under its name, or a free one like it."""
    target = folder / safe_name(path.name, os.listdir(folder))
    os.replace(path, target)
    sync_folder(folder)
    return target


def _json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, ensure_ascii=False, indent=2).encode()
