"""Packages the adapter builds and signs for a system that cannot: a document from JSON and
files, a status about a received document, the 01 or 02 its acknowledgement implies.

It signs only with the keys it was given (``backbone adapter http --signer KEY:CERT``),
each for the agency its certificate names; without one, a system sends signed packages
itself, as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from cryptography import x509
from pydantic import BaseModel, Field

from backbone import edxml, signing
from backbone.edxml.factory import File, new_status
from backbone.edxml.limits import Limits
from backbone.signing.pki import PrivateKey

from ..described import Described
from .problems import Problem


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

    async def document(self, described: Described, files: Sequence[File]) -> bytes:
        return await self.sign(described.sender, described.package(files))

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
