"""Packages the adapter builds and signs for a system that cannot: a document from JSON and
files, a status about a received document, the 01 or 02 its acknowledgement implies.

It signs only with the keys it was given (``backbone adapter http --signer KEY:CERT``),
each for the agency its certificate names; without one, a system sends signed packages
itself, as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import date

from cryptography import x509
from pydantic import BaseModel, Field

from backbone import edxml, signing
from backbone.edxml.factory import File, new_document, new_status
from backbone.edxml.limits import Limits
from backbone.signing.pki import PrivateKey

from .problems import Problem

CODE = Field(min_length=13, max_length=13, pattern=r"^[0-9]{3}\.[0-9]{2}\.[0-9]{2}\.[A-Z][0-9]{2}$")


class Composed(BaseModel):
    """A document to build (the ``metadata`` part of a multipart send)."""

    sender: str = CODE
    recipients: list[str] = Field(min_length=1, max_length=500)
    subject: str = Field(min_length=1, max_length=2000)
    number: str = Field(min_length=1, max_length=50, description="CodeNumber")
    notation: str | None = Field(default=None, max_length=100, description="CodeNotation")
    promulgated: date | None = Field(default=None, description="today if not given")
    type_code: str = Field(default="1", max_length=10)
    type_name: str = Field(default="Công văn", max_length=200)
    priority: int = Field(default=0, ge=0, le=4)
    content: str | None = Field(default=None, max_length=100_000)
    document_id: str | None = Field(
        default=None, max_length=255, description="derived if not given"
    )


class StatusRequest(BaseModel):
    """A status the adapter builds about a received document (``message``: its mailbox id)."""

    message: int = Field(ge=1, le=2**63 - 1)
    code: str = Field(pattern=r"^0[1-6]$", description="01 to 06; 02 with its reason")
    description: str | None = Field(default=None, max_length=2000)


class Signers:
    """The keys the adapter holds, by agency."""

    def __init__(
        self, held: Mapping[str, tuple[PrivateKey, Sequence[x509.Certificate]]], limits: Limits
    ) -> None:
        self.held, self.limits = dict(held), limits

    def __bool__(self) -> bool:
        return bool(self.held)

    def holds(self, agency: str) -> bool:
        return agency in self.held

    async def sign(self, agency: str, package: edxml.Package) -> bytes:
        if agency not in self.held:
            raise Problem(
                422,
                "no-signing-key",
                "the adapter holds no key for this agency: send a signed package",
                value=agency,
            )
        key, chain = self.held[agency]
        return await asyncio.to_thread(signing.sign, package, key, list(chain), limits=self.limits)

    async def document(self, composed: Composed, files: Sequence[File]) -> bytes:
        return await self.sign(
            composed.sender,
            new_document(
                sender=composed.sender,
                recipients=composed.recipients,
                subject=composed.subject,
                number=composed.number,
                notation=composed.notation,
                files=files,
                promulgated=composed.promulgated,
                type_code=composed.type_code,
                type_name=composed.type_name,
                priority=composed.priority,
                content=composed.content,
                document_id=composed.document_id,
            ),
        )

    async def status(
        self, reporter: str, received: bytes, code: str, description: str | None
    ) -> bytes:
        """A status from ``reporter`` about the document it received as ``received``."""
        document = edxml.parse(received, self.limits)
        if not isinstance(document, edxml.DocumentPackage):
            raise Problem(422, "not-a-document", "a status is about a received document")
        package = new_status(
            reporter=reporter, document=document, status_code=code, description=description
        )
        return await self.sign(reporter, package)
