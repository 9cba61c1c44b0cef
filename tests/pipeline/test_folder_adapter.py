"""The folder adapter end to end: a real broker, the validator and the tracker, two adapters
as processes of their own, each serving one agency through its folders."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from backbone import edxml
from backbone.broker import topology
from backbone.edxml.factory import File
from backbone.store import Store
from backbone.store.models import Delivery, Document

from ..conftest import RECIPIENTS, SENDER, Signer, make_document
from .conftest import Pipeline
from .helpers import wait_for
from .http_adapter import environment, free_port

pytestmark = pytest.mark.pipeline
H41 = RECIPIENTS[0]


def start_folder_adapter(
    pipeline: Pipeline, agency: str, root: Path, signer: Signer, *more: str
) -> subprocess.Popen[bytes]:
    """``backbone adapter folder --as AGENCY`` on ``root``, its log beside it."""
    root.mkdir(parents=True, exist_ok=True)
    with (root.parent / f"{agency}.log").open("ab") as log:
        return subprocess.Popen(
            [
                *(sys.executable, "-m", "backbone", "adapter", "folder", "--as", agency),
                *("--root", str(root), "--settle", "1"),
                *("--key", str(signer.key_path), "--cert", str(signer.cert_path)),
                *more,
            ],
            env=environment(pipeline, ""),
            stdout=log,
            stderr=subprocess.STDOUT,
        )


@contextlib.asynccontextmanager
async def folder_adapter(
    pipeline: Pipeline, agency: str, root: Path, signer: Signer, *more: str
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """One started, once its folders are there; stopped (SIGTERM) at the end."""
    process = start_folder_adapter(pipeline, agency, root, signer, *more)
    try:
        await wait_for(lambda: _exists(root / "status-sent"), 60)
        yield process
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _exists(path: Path) -> bool:
    return path.exists()


def _documents(inbox: Path) -> dict[str, Path]:
    """The received documents' folders, by DocumentId."""
    found = {}
    for folder in inbox.iterdir():
        if not folder.name.startswith(".") and (folder / "meta.json").exists():
            found[json.loads((folder / "meta.json").read_text())["document_id"]] = folder
    return found


def _statuses(folder: Path) -> set[tuple[str, str]]:
    """(DocumentId, code) of each status written."""
    return {
        (facts["document_id"], facts["code"])
        for facts in (json.loads(p.read_text()) for p in folder.glob("*.json"))
    }


async def test_fifty_dropped_files_arrive_once_and_their_statuses_come_back(
    pipeline: Pipeline, signers: dict[str, Signer], tmp_path: Path
) -> None:
    """G22's system drops 50 signed documents (five written slowly, in pieces); H41's
    adapter writes each with its attachments, its system answers 03 by dropping a JSON;
    G22's statuses/ then holds the 01 and the 03 of each, as the tracker recorded them."""
    for agency in (SENDER, H41):
        await pipeline.add_agency(agency)
    sent: dict[str, bytes] = {}
    for number in range(50):
        document = make_document(
            recipients=[H41], document_id=f"folder-{uuid.uuid4().hex[:8]}", number=str(number)
        )
        sent[document.document_id] = signers["G22"].sign(document)
    a, b = tmp_path / "g22", tmp_path / "h41"
    port = free_port()
    async with (
        folder_adapter(pipeline, SENDER, a, signers["G22"], "--metrics-port", str(port)),
        folder_adapter(pipeline, H41, b, signers["H41"]),
    ):
        for index, (document_id, body) in enumerate(sent.items()):
            name = f"{index:02d} {document_id}.edxml"
            if index % 10 == 0:  # in pieces, under its final name, slower than one settle
                with (a / "outbox" / name).open("wb") as out:
                    for start in range(0, len(body), len(body) // 3 + 1):
                        out.write(body[start : start + len(body) // 3 + 1])
                        out.flush()
                        await asyncio.sleep(0.3)
            else:  # written under a temporary name, then renamed
                (a / "outbox" / f".{name}.tmp").write_bytes(body)
                (a / "outbox" / f".{name}.tmp").rename(a / "outbox" / name)

        async def all_received() -> bool:
            return len(_documents(b / "inbox")) == len(sent)

        await wait_for(all_received, 120)
        received = _documents(b / "inbox")
        assert set(received) == set(sent)
        for document_id, folder in received.items():
            assert (folder / "package.edxml").read_bytes() == sent[document_id]  # byte for byte
            meta = json.loads((folder / "meta.json").read_text())
            (attached,) = meta["attachments"]
            assert (folder / attached["file"]).read_bytes() == bytes(range(256)) * 20
            order = {"document": document_id, "to": SENDER, "code": "03", "description": "Xử lý"}
            (b / "status-out" / f"{document_id}.json").write_text(json.dumps(order))

        async def all_answered() -> bool:
            wanted = {(d, code) for d in sent for code in ("01", "03")}
            return wanted <= _statuses(a / "statuses")

        await wait_for(all_answered, 120)
        assert sorted(p.name for p in (a / "outbox").iterdir()) == []
        assert len(list((a / "sent").glob("*.edxml"))) == len(sent)
        assert len(list((a / "sent").glob("*.receipt.json"))) == len(sent)
        assert list((a / "failed").iterdir()) == []
        assert len(list((b / "status-sent").iterdir())) == len(sent)
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
        assert 'backbone_adapter_folder_files_total{folder="outbox",outcome="sent"} 50.0' in metrics
        assert 'backbone_adapter_folder_received_total{kind="status"} 100.0' in metrics

    store = Store(pipeline.settings.database_url)
    try:
        async with store.sessions() as session:
            rows = await session.execute(
                select(Document.document_id, Delivery.status_code)
                .join(Delivery, Delivery.document_pk == Document.id)
                .where(Document.document_id.in_(list(sent)))
            )
            recorded = {document_id: code for document_id, code in rows}
    finally:
        await store.close()
    assert recorded == dict.fromkeys(sent, "03")


HOSTILE = [
    "../../etc/x",
    "/abs/path",
    "CON",
    "C:\\Windows\\win.ini",
    "ệ" * 1000 + ".pdf",
    "same.pdf",
    "SAME.pdf",
    "same.pdf",
    "..",
]


async def test_hostile_attachment_names_land_inside_the_document_s_folder_mapped(
    pipeline: Pipeline, signers: dict[str, Signer], tmp_path: Path
) -> None:
    """Whatever the package names its attachments, each lands inside inbox/<document>/
    under a safe name of its own, and meta.json maps each name to its file. (A NUL cannot
    be in an XML package at all: tests/unit/test_folder_names.py covers it.)"""
    for agency in (SENDER, H41):
        await pipeline.add_agency(agency)
    files = [File(name, f"tệp {i}".encode()) for i, name in enumerate(HOSTILE)]
    document = make_document(
        recipients=[H41], document_id=f"hostile-{uuid.uuid4().hex[:8]}", files=files
    )
    a, b = tmp_path / "g22", tmp_path / "h41"
    async with (
        folder_adapter(pipeline, SENDER, a, signers["G22"]),
        folder_adapter(pipeline, H41, b, signers["H41"]),
    ):
        (a / "outbox" / "hostile.edxml").write_bytes(signers["G22"].sign(document))

        async def arrived() -> bool:
            return bool(_documents(b / "inbox"))

        await wait_for(arrived, 60)
    (folder,) = _documents(b / "inbox").values()
    meta = json.loads((folder / "meta.json").read_text())
    mapped = [(a["name"], a["file"]) for a in meta["attachments"]]
    assert [name for name, _ in mapped] == HOSTILE
    written = {p.name for p in folder.iterdir()} - {"package.edxml", "meta.json"}
    assert written == {file for _, file in mapped}  # one file each, none elsewhere
    assert len({file.casefold() for _, file in mapped}) == len(HOSTILE)
    for (_, file), given in zip(mapped, files, strict=True):
        assert (folder / file).read_bytes() == given.data
        assert (folder / file).resolve().parent == folder.resolve()
    named = [p for p in tmp_path.rglob("*") if p.name in {"x", "path", "win.ini"}]
    assert {p.parent for p in named} == {folder}  # inside the document's folder only
    assert not (b / "etc").exists() and not Path("/abs/path").exists()


async def test_both_adapters_killed_mid_batch_then_restarted_deliver_each_file_once(
    pipeline: Pipeline, signers: dict[str, Signer], tmp_path: Path
) -> None:
    """500 files dropped at once; the sender's adapter is SIGKILLed once some are sent, the
    recipient's once some are written; both restart on the same folders. Every document
    arrives exactly once and every file ends in sent/ (none in failed/, none left)."""
    for agency in (SENDER, H41):
        await pipeline.add_agency(agency)
    a, b = tmp_path / "g22", tmp_path / "h41"
    bodies = {}
    for number in range(500):
        document = make_document(
            recipients=[H41], document_id=f"kill-{uuid.uuid4().hex[:10]}", number=str(number)
        )
        bodies[document.document_id] = signers["G22"].sign(document)
    sender = start_folder_adapter(pipeline, SENDER, a, signers["G22"])
    recipient = start_folder_adapter(pipeline, H41, b, signers["H41"])
    try:
        await wait_for(lambda: _exists(a / "outbox"), 60)
        for index, body in enumerate(bodies.values()):
            (a / "outbox" / f".{index:03d}.tmp").write_bytes(body)
            (a / "outbox" / f".{index:03d}.tmp").rename(a / "outbox" / f"{index:03d}.edxml")

        async def some_sent() -> bool:
            return len(list((a / "sent").glob("*.receipt.json"))) >= 50

        await wait_for(some_sent, 120)
        sender.kill()
        sender.wait()

        async def some_written() -> bool:
            return len(_documents(b / "inbox")) >= 30

        await wait_for(some_written, 120)
        recipient.kill()
        recipient.wait()
        left = len(list((a / "outbox").glob("*.edxml")))
        assert left > 0, "the sender was killed with files still to send"

        sender = start_folder_adapter(pipeline, SENDER, a, signers["G22"])
        recipient = start_folder_adapter(pipeline, H41, b, signers["H41"])

        async def all_received() -> bool:
            return len(_documents(b / "inbox")) >= len(bodies) and not any((a / "outbox").iterdir())

        await wait_for(all_received, 240)
    finally:
        _stop(sender)
        _stop(recipient)
    folders = [f for f in (b / "inbox").iterdir() if not f.name.startswith(".")]
    assert len(folders) == len(bodies)  # none twice
    assert set(_documents(b / "inbox")) == set(bodies)
    for document_id, folder in _documents(b / "inbox").items():
        assert (folder / "package.edxml").read_bytes() == bodies[document_id]
    assert len(list((a / "sent").glob("*.edxml"))) == len(bodies)
    assert list((a / "failed").iterdir()) == []


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """``folder`` cannot be written, even by root (immutable), until the block ends."""
    as_root = os.geteuid() == 0
    if as_root:
        subprocess.run(["chattr", "+i", str(folder)], check=True)
    else:
        folder.chmod(0o555)
    try:
        with pytest.raises(OSError):  # it is so, or the test proves nothing
            (folder / ".probe").mkdir()
        yield
    finally:
        if as_root:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        else:
            folder.chmod(0o755)


async def test_an_inbox_that_cannot_be_written_for_20_s_gets_everything_after(
    pipeline: Pipeline, signers: dict[str, Signer], tmp_path: Path
) -> None:
    """While H41's inbox/ is read-only, its adapter holds the deliveries unacked and tries
    again (the broker still has all of them); once it can write, every one arrives."""
    for agency in (SENDER, H41):
        await pipeline.add_agency(agency)
    bodies = {}
    for number in range(5):
        document = make_document(
            recipients=[H41], document_id=f"ro-{uuid.uuid4().hex[:8]}", number=str(number)
        )
        bodies[document.document_id] = signers["G22"].sign(document)
    a, b = tmp_path / "g22", tmp_path / "h41"
    queue = topology.inbox(H41)
    async with (
        folder_adapter(pipeline, SENDER, a, signers["G22"]),
        folder_adapter(pipeline, H41, b, signers["H41"]),
    ):
        with read_only(b / "inbox"):
            for index, body in enumerate(bodies.values()):
                (a / "outbox" / f".{index}.tmp").write_bytes(body)
                (a / "outbox" / f".{index}.tmp").rename(a / "outbox" / f"{index}.edxml")

            async def all_held() -> bool:
                held = await asyncio.to_thread(pipeline.broker.mgmt.queue, pipeline.vhost, queue)
                return held.get("messages_unacknowledged") == len(bodies)

            await wait_for(all_held, 30)  # delivered to the adapter, none acked
            await asyncio.sleep(20)  # the outage the issue asks for
            held = await asyncio.to_thread(pipeline.broker.mgmt.queue, pipeline.vhost, queue)
            assert held["messages"] == len(bodies)  # still all there: none was acked
            assert _documents(b / "inbox") == {}
            assert "cannot write what arrived" in (tmp_path / f"{H41}.log").read_text()

        async def all_arrived() -> bool:
            return set(_documents(b / "inbox")) == set(bodies)

        await wait_for(all_arrived, 60)


async def test_a_json_description_is_built_and_sent_a_refusal_named_after_its_file(
    pipeline: Pipeline, signers: dict[str, Signer], tmp_path: Path
) -> None:
    """With the agency's key, a JSON description in outbox/ (its files in a folder there)
    becomes a signed document; an invalid one goes to failed/ with what is wrong; a file
    the backbone refuses (the same DocumentId again) gets its 02 in rejected/."""
    for agency in (SENDER, H41):
        await pipeline.add_agency(agency)
    a, b = tmp_path / "g22", tmp_path / "h41"
    scan = b"%PDF-1.7 " + bytes(range(256)) * 30
    async with (
        folder_adapter(pipeline, SENDER, a, signers["G22"]),
        folder_adapter(pipeline, H41, b, signers["H41"]),
    ):
        (a / "outbox" / "cv-7").mkdir()
        (a / "outbox" / "cv-7" / "Tờ trình.pdf").write_bytes(scan)
        (a / "outbox" / "cv-7" / "phụ lục.txt").write_text("Phụ lục")
        described = {
            "sender": SENDER,
            "recipients": [H41],
            "subject": "Về việc cấp phép",
            "number": "7",
            "notation": "VPCP-KGVX",
            "document_id": f"described-{uuid.uuid4().hex[:8]}",
            "files": ["cv-7/Tờ trình.pdf", "cv-7/phụ lục.txt"],
        }
        (a / "outbox" / "cv-7.json").write_text(json.dumps(described, ensure_ascii=False))
        (a / "outbox" / "broken.json").write_text(json.dumps({**described, "files": ["../x"]}))
        not_ours = make_document(sender=H41, recipients=[SENDER], document_id="not-ours")
        (a / "outbox" / "not-ours.edxml").write_bytes(signers["H41"].sign(not_ours))

        async def arrived() -> bool:
            failed = {p.name for p in (a / "failed").iterdir()}
            return bool(_documents(b / "inbox")) and {"broken.json", "not-ours.edxml"} <= failed

        await wait_for(arrived, 60)
        # another package under the same DocumentId: the backbone refuses it
        other = make_document(recipients=[H41], document_id=described["document_id"])
        (a / "outbox" / "again.edxml").write_bytes(signers["G22"].sign(other))

        async def refused() -> bool:
            return any((a / "rejected").iterdir())

        await wait_for(refused, 60)
        (folder,) = _documents(b / "inbox").values()
        package = edxml.parse((folder / "package.edxml").read_bytes())
        assert isinstance(package, edxml.DocumentPackage)
        assert package.header.subject == "Về việc cấp phép"
        meta = json.loads((folder / "meta.json").read_text())
        assert [(x["name"], (folder / x["file"]).read_bytes()) for x in meta["attachments"]] == [
            ("Tờ trình.pdf", scan),
            ("phụ lục.txt", "Phụ lục".encode()),
        ]
        moved = {p.name for p in (a / "sent" / "cv-7 files").iterdir()}
        assert moved == {"phụ lục.txt", "Tờ trình.pdf"}
        assert (a / "sent" / "cv-7.json.receipt.json").exists()
        error = json.loads((a / "failed" / "broken.json.error.json").read_text())
        assert (error["code"], error["path"]) == ("file-missing", "files.0")
        error = json.loads((a / "failed" / "not-ours.edxml.error.json").read_text())
        assert error["code"] == "not-your-agency"
        (rejection,) = (json.loads(p.read_text()) for p in (a / "rejected").iterdir())
        assert (rejection["code"], rejection["file"]) == ("02", "again.edxml")
        assert rejection["rejection"]["code"] == "duplicate"
