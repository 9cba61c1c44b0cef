"""Typed operations on the store, so no worker writes SQL of its own."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from cryptography import x509
from sqlalchemy import func, insert, or_, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from ..agency import AgencyCode
from ..edxml.models import DocumentPackage
from ..edxml.rules import DATE_FORMAT
from ..signing.pki import fingerprint
from .models import (
    AccessChange,
    Agency,
    Certificate,
    DirectoryVersion,
    Document,
    EventRecord,
    Principal,
    PrincipalScope,
    new_id,
)


class Acceptance(StrEnum):
    NEW = "new"  # first time this sender's DocumentId is accepted
    REDELIVERY = "redelivery"  # the same submission again (same content): carry on
    DUPLICATE = "duplicate"  # another submission reusing an accepted DocumentId


@dataclass(frozen=True, slots=True)
class AcceptanceRecord:
    outcome: Acceptance
    backbone_id: str  # the tracking id of the document first accepted under this DocumentId


def document_facts(package: DocumentPackage) -> dict[str, object]:
    """The columns of ``documents`` that come from the package itself."""
    header = package.header
    business = package.trace.bussiness if package.trace else None
    promulgated = header.promulgation_info.promulgation_date
    priority = header.other_info.priority if header.other_info else None
    return {
        "bussiness_doc_type": int(business.bussiness_doc_type) if business else 0,
        "subject": header.subject,
        "code_number": header.code.code_number,
        "code_notation": header.code.code_notation,
        "promulgation_date": datetime.strptime(promulgated, DATE_FORMAT).date(),
        "priority": int(priority) if priority is not None else None,
    }


@dataclass(frozen=True, slots=True)
class Submission:
    """What the validator knows of a package when it records the acceptance."""

    sender: str
    document_id: str
    content_sha256: str
    size: int
    facts: dict[str, object] | None = None


_FACTS = (  # the columns document_facts() fills; absent facts are NULL
    "bussiness_doc_type",
    "subject",
    "code_number",
    "code_notation",
    "promulgation_date",
    "priority",
)
_CHUNK = 500  # rows per statement, well within SQLite's limit on bound parameters


async def record_acceptances(
    session: AsyncSession, submissions: Sequence[Submission]
) -> list[AcceptanceRecord]:
    """Record many acceptances in one statement (per 500), each decided as if alone.

    An insert that does nothing on conflict decides it, so concurrent validators (threads
    or processes, SQLite or PostgreSQL) agree: exactly one gets NEW. Within a batch the
    first of two submissions of one DocumentId wins, as it would one after the other.
    """
    now = datetime.now(UTC)
    rows = [
        {
            "id": new_id(),
            "sender": s.sender,
            "document_id": s.document_id,
            "content_sha256": s.content_sha256,
            "size": s.size,
            "submitted_at": now,
            "accepted_at": now,
            **dict.fromkeys(_FACTS),
            **(s.facts or {}),
        }
        for s in submissions
    ]
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    # one cached statement, executed for many rows (SQLAlchemy batches them into
    # multi-row INSERT ... RETURNING): compiling a statement per batch size costs more
    statement = (
        dialect.insert(Document.__table__)
        .on_conflict_do_nothing(index_elements=["sender", "document_id"])
        .returning(Document.__table__.c.id)
    )
    inserted = set((await session.execute(statement, rows)).scalars())
    others = {(r["sender"], r["document_id"]) for r in rows if r["id"] not in inserted}
    existing: dict[tuple[str, str], tuple[str, str]] = {}
    keys = sorted(others)
    for start in range(0, len(keys), _CHUNK):
        found = await session.execute(
            select(
                Document.sender, Document.document_id, Document.id, Document.content_sha256
            ).where(tuple_(Document.sender, Document.document_id).in_(keys[start : start + _CHUNK]))
        )
        existing.update({(r.sender, r.document_id): (r.id, r.content_sha256) for r in found})
    records = []
    for row in rows:
        if row["id"] in inserted:
            records.append(AcceptanceRecord(Acceptance.NEW, str(row["id"])))
            continue
        backbone_id, sha = existing[(str(row["sender"]), str(row["document_id"]))]
        same = sha == row["content_sha256"]
        records.append(
            AcceptanceRecord(Acceptance.REDELIVERY if same else Acceptance.DUPLICATE, backbone_id)
        )
    return records


# --- agencies -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgencyRow:
    code: AgencyCode
    name: str
    parent: AgencyCode | None


async def get_agency(session: AsyncSession, code: str) -> Agency | None:
    return await session.get(Agency, code)


async def existing_agencies(session: AsyncSession, codes: Iterable[str]) -> dict[str, Agency]:
    wanted = list(codes)
    found: dict[str, Agency] = {}
    for start in range(0, len(wanted), 500):  # bounded IN lists
        chunk = wanted[start : start + 500]
        rows = await session.execute(select(Agency).where(Agency.code.in_(chunk)))
        found.update({a.code: a for a in rows.scalars()})
    return found


async def upsert_agencies(session: AsyncSession, rows: Sequence[AgencyRow]) -> tuple[int, int, int]:
    """Insert new agencies and update changed ones; (added, updated, unchanged).

    Parents must come before children in ``rows`` or already be stored.
    """
    existing = await existing_agencies(session, (str(r.code) for r in rows))
    now = datetime.now(UTC)
    added: list[dict[str, object]] = []
    changed: list[dict[str, object]] = []
    for row in rows:
        parent = str(row.parent) if row.parent else None
        current = existing.get(str(row.code))
        if current is None:
            added.append(
                {
                    "code": str(row.code),
                    "name": row.name,
                    "parent_code": parent,
                    "level": row.code.level,
                    "root": row.code.parts[3],
                    "active": True,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        elif (current.name, current.parent_code, current.active) != (row.name, parent, True):
            changed.append(
                {
                    "code": str(row.code),
                    "name": row.name,
                    "parent_code": parent,
                    "active": True,
                    "updated_at": now,
                }
            )
    if added or changed:
        first = await _take_versions(session, len(added) + len(changed))
        for number, values in enumerate([*added, *changed], start=first):
            values["version"] = number
    if added:
        await session.execute(insert(Agency), added)
    for values in changed:
        await session.execute(update(Agency).where(Agency.code == values["code"]).values(**values))
    return len(added), len(changed), len(rows) - len(added) - len(changed)


async def set_agency_active(session: AsyncSession, code: str, active: bool) -> bool:
    if await session.scalar(select(Agency.code).where(Agency.code == code)) is None:
        return False
    result = await session.execute(
        update(Agency)
        .where(Agency.code == code)
        .values(
            active=active,
            updated_at=datetime.now(UTC),
            version=await _take_versions(session, 1),
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def _take_versions(session: AsyncSession, count: int) -> int:
    """The first of ``count`` new change numbers of the directory. The counter's row stays
    locked until the commit, so a writer that comes after takes numbers after these: a
    system that synced up to a number never misses a change committed later below it."""
    last = await session.scalar(
        update(DirectoryVersion)
        .where(DirectoryVersion.id == 1)
        .values(value=DirectoryVersion.value + count)
        .returning(DirectoryVersion.value)
    )
    assert last is not None, "the directory's counter row (migration 0006) is missing"
    return int(last) - count + 1


async def last_version(session: AsyncSession) -> int:
    """The directory's last change number."""
    return int(
        await session.scalar(select(DirectoryVersion.value).where(DirectoryVersion.id == 1)) or 0
    )


async def directory_changes(session: AsyncSession, since: int, limit: int) -> list[Agency]:
    """Agencies added, changed or removed after change number ``since``, in order."""
    query = select(Agency).where(Agency.version > since).order_by(Agency.version).limit(limit)
    return list((await session.execute(query)).scalars())


def under_pattern(code: AgencyCode) -> str:
    """A LIKE pattern for every agency below ``code``: its parts from its level up fixed."""
    keep = 4 - code.level
    return ".".join(
        part if index >= keep else "_" * len(part) for index, part in enumerate(code.parts)
    )


async def list_agencies(
    session: AsyncSession,
    *,
    level: int | None = None,
    under: AgencyCode | None = None,
    include_inactive: bool = False,
) -> list[Agency]:
    query = select(Agency).order_by(Agency.root, Agency.level, Agency.code)
    if level is not None:
        query = query.where(Agency.level == level)
    if under is not None:
        query = query.where(
            Agency.root == under.parts[3],
            Agency.code.like(under_pattern(under)),
            Agency.code != str(under),
        )
    if not include_inactive:
        query = query.where(Agency.active.is_(True))
    return list((await session.execute(query)).scalars())


async def count_agencies(session: AsyncSession) -> int:
    return int((await session.execute(select(func.count()).select_from(Agency))).scalar_one())


# --- principals ---------------------------------------------------------------------------


async def add_principal(
    session: AsyncSession, username: str, kind: str, patterns: Sequence[str]
) -> Principal:
    principal = Principal(
        username=username,
        kind=kind,
        scopes=[PrincipalScope(pattern=p) for p in dict.fromkeys(patterns)],
    )
    session.add(principal)
    await session.flush()
    return principal


async def get_principal(session: AsyncSession, username: str) -> Principal | None:
    result = await session.execute(select(Principal).where(Principal.username == username))
    return result.scalar_one_or_none()


async def list_principals(session: AsyncSession, kind: str | None = None) -> list[Principal]:
    query = select(Principal).order_by(Principal.username)
    if kind is not None:
        query = query.where(Principal.kind == kind)
    return list((await session.execute(query)).scalars())


async def set_principal_active(session: AsyncSession, username: str, active: bool) -> bool:
    result = await session.execute(
        update(Principal).where(Principal.username == username).values(active=active)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def record_access_change(
    session: AsyncSession, principal: str, action: str, detail: str | None, actor: str
) -> None:
    session.add(AccessChange(principal=principal, action=action, detail=detail, actor=actor))
    await session.flush()


async def access_changes(session: AsyncSession, principal: str) -> list[AccessChange]:
    result = await session.execute(
        select(AccessChange)
        .where(AccessChange.principal == principal)
        .order_by(AccessChange.at, AccessChange.id)
    )
    return list(result.scalars())


# --- certificates -------------------------------------------------------------------------


async def add_certificate(
    session: AsyncSession, agency_code: str, certificate: x509.Certificate
) -> Certificate:
    row = Certificate(
        agency_code=agency_code,
        fingerprint=fingerprint(certificate),
        subject=certificate.subject.rfc4514_string(),
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
    )
    session.add(row)
    await session.flush()
    return row


async def find_certificate(session: AsyncSession, fingerprint_hex: str) -> Certificate | None:
    result = await session.execute(
        select(Certificate).where(Certificate.fingerprint == fingerprint_hex.lower())
    )
    return result.scalar_one_or_none()


async def certificates_for(session: AsyncSession, agency_code: str) -> list[Certificate]:
    result = await session.execute(
        select(Certificate)
        .where(Certificate.agency_code == agency_code)
        .order_by(Certificate.not_after)
    )
    return list(result.scalars())


# --- lookups by the id a sender knows -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcomes:
    """Everything the backbone did with submissions under one id: the accepted documents
    (their deliveries say routed or undeliverable) and the rejections."""

    documents: list[Document]
    rejections: list[EventRecord]


async def find_outcomes(session: AsyncSession, key: str) -> Outcomes:
    """By the DocumentId the sender used, the backbone id, or (for a submission refused
    before its DocumentId could be read) the message id, recorded as ``message:<id>``."""
    documents = await session.execute(
        select(Document)
        .where(or_(Document.id == key, Document.document_id == key))
        .order_by(Document.submitted_at)
    )
    rejections = await session.execute(
        select(EventRecord)
        .where(
            EventRecord.kind == "rejected",
            EventRecord.edxml_document_id.in_((key, f"message:{key}")),
        )
        .order_by(EventRecord.recorded_at, EventRecord.id)
    )
    return Outcomes(list(documents.scalars()), list(rejections.scalars()))
