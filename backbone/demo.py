"""``backbone demo``: one document's story, told through what exists so far.

The format layer is what exists: a ministry writes a package, the backbone reads and
checks it, a province answers with a status, and a forged package is refused with a
reason. Routing over RabbitMQ joins this story with the pipeline.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from . import edxml
from .edxml.factory import File, new_document, new_status
from .errors import PackageError

SENDER = "000.00.00.G22"  # Government Office
RECIPIENTS = ("000.00.00.H41", "000.03.15.H41")  # a province and one of its district units


def run(console: Console | None = None) -> None:
    console = console or Console(highlight=False)
    workdir = Path(tempfile.mkdtemp(prefix="backbone-demo-"))
    console.rule("[bold]backbone demo: the edXML format layer")

    package = new_document(
        sender=SENDER,
        recipients=RECIPIENTS,
        subject="V/v kết nối, liên thông phần mềm quản lý văn bản",
        number="7816",
        notation="VPCP-TTĐT",
        files=[File("cong-van-7816.pdf", b"%PDF-1.7 demo document\n" * 200, "application/pdf")],
    )
    data = edxml.build(package)
    path = workdir / "cong-van-7816.edxml"
    path.write_bytes(data)
    console.print(
        f"1. The Government Office ({SENDER}) writes a package for "
        f"{' and '.join(RECIPIENTS)}: {len(data)} bytes, {path}"
    )

    received = edxml.load(path.read_bytes())
    assert isinstance(received, edxml.DocumentPackage)
    console.print(
        f"2. The backbone reads it safely and checks it: {received.kind} "
        f"{received.document_id!r}, {len(received.attachments)} attachment, "
        f"identical to what was written: {received == package}"
    )

    status = new_status(
        reporter=RECIPIENTS[0], document=package, status_code="01", description="Đã đến"
    )
    answer = edxml.load(edxml.build(status))
    assert isinstance(answer, edxml.StatusPackage)
    console.print(
        f"3. The province answers with status {answer.header.status_code} "
        f"({edxml.STATUS_CODES[answer.header.status_code]}) about "
        f"{answer.document_id!r}"
    )

    forged = data.replace(SENDER.encode(), b"vxp.saas.03", 1)
    try:
        edxml.load(forged)
    except PackageError as exc:
        console.print(
            "4. A package with a made-up sender is refused: "
            f"[red]{escape(str(exc.issues[0]))}[/red]"
        )

    hostile = (
        b'<?xml version="1.0"?><!DOCTYPE edXML [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b"<edXML>&x;</edXML>"
    )
    try:
        edxml.load(hostile)
    except PackageError as exc:
        console.print(
            f"5. An entity attack is refused before anything is read: "
            f"[red]{escape(str(exc.issues[0]))}[/red]"
        )
    console.rule("routing over RabbitMQ, signatures and status tracking join in later issues")
