"""``backbone demo``: one document's story, told through what exists so far.

A ministry writes and signs a package, the backbone reads it safely and verifies the
signature, a province answers with a status, and forgeries are refused with a reason.
Routing over RabbitMQ joins this story with the pipeline.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from . import edxml, signing
from .edxml.factory import File, new_document, new_status
from .errors import PackageError

SENDER = "000.00.00.G22"  # Government Office
RECIPIENTS = ("000.00.00.H41", "000.03.15.H41")  # a province and one of its district units


def _refusal(console: Console, step: str, attempt: bytes, verifier: signing.Verifier) -> None:
    try:
        verifier.verify(attempt)
    except PackageError as exc:
        console.print(f"{step} [red]{escape(str(exc.issues[0]))}[/red]")
    else:  # pragma: no cover - the demo would be lying
        raise AssertionError(f"{step} was accepted")


def run(console: Console | None = None) -> None:
    console = console or Console(highlight=False)
    workdir = Path(tempfile.mkdtemp(prefix="backbone-demo-"))
    console.rule("[bold]backbone demo: signed edXML packages")

    pki = signing.Pki(workdir / "pki")
    pki.init(intermediate=True)
    ministry = pki.issue(SENDER, workdir / "certs", name="Văn phòng Chính phủ")
    province = pki.issue(RECIPIENTS[0], workdir / "certs", name="UBND Tỉnh Nghệ An")
    trust = signing.TrustStore.from_files(pki.ca_bundle, pki.crls())
    verifier = signing.Verifier(trust, signing.SubjectBinding())
    console.print(
        f"0. A development PKI in {pki.directory}: a root, an issuing CA, and "
        f"certificates for {SENDER} and {RECIPIENTS[0]}"
    )

    package = new_document(
        sender=SENDER,
        recipients=RECIPIENTS,
        subject="V/v kết nối, liên thông phần mềm quản lý văn bản",
        number="7816",
        notation="VPCP-TTĐT",
        files=[File("cong-van-7816.pdf", b"%PDF-1.7 demo document\n" * 200, "application/pdf")],
    )
    signed = signing.sign(
        package,
        signing.load_private_key(str(ministry.key)),
        signing.load_certificates(str(ministry.certificate)),
    )
    path = workdir / "cong-van-7816.edxml"
    path.write_bytes(signed)
    console.print(
        f"1. The Government Office ({SENDER}) writes and signs a package for "
        f"{' and '.join(RECIPIENTS)}: {len(signed)} bytes, {path}"
    )

    verified = verifier.verify(path.read_bytes())
    received = edxml.check(verified.package)
    console.print(
        f"2. The backbone reads it safely and verifies it: {received.kind} "
        f"{received.document_id!r}, signed by "
        f"{verified.certificate.subject.rfc4514_string()}, "
        f"identical to what was written: {received == package}"
    )

    status = new_status(
        reporter=RECIPIENTS[0], document=package, status_code="01", description="Đã đến"
    )
    answer = verifier.verify(
        signing.sign(
            status,
            signing.load_private_key(str(province.key)),
            signing.load_certificates(str(province.certificate)),
        )
    ).package
    assert isinstance(answer, edxml.StatusPackage)
    console.print(
        f"3. The province answers with a signed status {answer.header.status_code} "
        f"({edxml.STATUS_CODES[answer.header.status_code]}) about "
        f"{answer.document_id!r}"
    )

    _refusal(
        console,
        "4. One character of the subject changed in transit:",
        signed.replace("liên thông".encode(), "liên thôn9".encode(), 1),
        verifier,
    )
    impostor = signing.sign(
        package,
        signing.load_private_key(str(province.key)),
        signing.load_certificates(str(province.certificate)),
    )
    _refusal(
        console,
        "5. The province signs a package claiming to come from the ministry:",
        impostor,
        verifier,
    )
    _refusal(
        console,
        "6. An entity attack is refused before anything is read:",
        b'<?xml version="1.0"?><!DOCTYPE edXML [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b"<edXML>&x;</edXML>",
        verifier,
    )
    console.rule("routing over RabbitMQ and status tracking join in later issues")
