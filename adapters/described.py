"""A document described in JSON, for systems that cannot build edXML: the HTTP adapter's
multipart send and the folder adapter's JSON in ``outbox/`` both take it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from pydantic import BaseModel, Field

from backbone import edxml
from backbone.edxml.factory import File, new_document

CODE = Field(min_length=13, max_length=13, pattern=r"^[0-9]{3}\.[0-9]{2}\.[0-9]{2}\.[A-Z][0-9]{2}$")


class Described(BaseModel):
    """A document to build and sign, and who sends it to whom."""

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

    def package(self, files: Sequence[File]) -> edxml.DocumentPackage:
        """The unsigned package, with ``files`` attached."""
        return new_document(
            sender=self.sender,
            recipients=self.recipients,
            subject=self.subject,
            number=self.number,
            notation=self.notation,
            files=files,
            promulgated=self.promulgated,
            type_code=self.type_code,
            type_name=self.type_name,
            priority=self.priority,
            content=self.content,
            document_id=self.document_id,
        )
