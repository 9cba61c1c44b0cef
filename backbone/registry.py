"""The agency registry: who exists, who may act for whom, which certificates sign for whom.

Workers ask it the same questions for every message, so answers are cached for a short,
configurable time (``BACKBONE_REGISTRY_TTL``, seconds): a deactivation or a new
certificate takes effect everywhere within that time, and at once in the process that
made the change.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from .agency import AgencyCode, AgencyCodeError, PatternError, topic_matches, validate_pattern
from .errors import BackboneError
from .signing.pki import fingerprint
from .store import Store
from .store import repository as repo
from .store.models import AccessChange, Agency, Principal

_MISSING = object()
IMPORT_BATCH = 2000


class RegistryError(BackboneError):
    """A registry operation cannot be done: unknown agency, bad parent, name taken..."""


class _TtlCache:
    """Answers remembered for ``ttl`` seconds of a monotonic clock."""

    def __init__(self, ttl: float, clock: Callable[[], float]) -> None:
        self.ttl = ttl
        self.clock = clock
        self._entries: dict[Hashable, tuple[float, object]] = {}

    def get(self, key: Hashable) -> object:
        entry = self._entries.get(key)
        if entry is None or entry[0] < self.clock():
            return _MISSING
        return entry[1]

    def put(self, key: Hashable, value: object) -> None:
        if len(self._entries) > 100_000:
            self._entries.clear()
        self._entries[key] = (self.clock() + self.ttl, value)

    def clear(self) -> None:
        self._entries.clear()


@dataclass
class ImportReport:
    """What an import did; ``refused`` holds (line number, reason) pairs."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    refused: list[tuple[int, str]] = field(default_factory=list)


class Registry:
    def __init__(
        self, store: Store, *, ttl: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        self._cache = _TtlCache(ttl, clock)

    # --- agencies -------------------------------------------------------------------------

    async def add_agency(
        self, code: str, name: str, *, parent: str | None = None, principal: bool = True
    ) -> Agency:
        """Register (or re-activate and rename) an agency; with ``principal``, also the
        broker user that acts for it alone (its username is the identifier)."""
        agency = _code(code)
        parent_code = _parent(agency, parent)
        if not name.strip():
            raise RegistryError(f"{code}: the name is empty")
        async with self.store.transaction() as session:
            if parent_code is not None and await repo.get_agency(session, str(parent_code)) is None:
                raise RegistryError(f"{code}: the parent {parent_code} is not registered")
            await repo.upsert_agencies(session, [repo.AgencyRow(agency, name.strip(), parent_code)])
            if principal:
                existing = await repo.get_principal(session, code)
                if existing is None:
                    await repo.add_principal(session, code, "agency", [code])
                elif existing.kind != "agency":
                    raise RegistryError(f"{code} is already the name of a gateway")
                elif not existing.active:
                    existing.active = True
            row = await repo.get_agency(session, code)
        self._cache.clear()
        assert row is not None
        return row

    async def deactivate_agency(self, code: str) -> None:
        """Deactivate, with its own principal: it can no longer send or receive; its
        history stays."""
        async with self.store.transaction() as session:
            if not await repo.set_agency_active(session, str(_code(code)), False):
                raise RegistryError(f"{code} is not registered")
            await repo.set_principal_active(session, code, False)
        self._cache.clear()

    async def get_agency(self, code: str) -> Agency | None:
        async with self.store.sessions() as session:
            return await repo.get_agency(session, code)

    async def list_agencies(
        self, *, level: int | None = None, under: str | None = None, include_inactive: bool = False
    ) -> list[Agency]:
        async with self.store.sessions() as session:
            return await repo.list_agencies(
                session,
                level=level,
                under=_code(under) if under else None,
                include_inactive=include_inactive,
            )

    async def import_csv(
        self, path: Path, progress: Callable[[int, int], None] | None = None
    ) -> ImportReport:
        """Import ``code,name,parent`` rows; idempotent. Parents may come in any order."""
        report = ImportReport()
        rows: dict[str, tuple[int, repo.AgencyRow]] = {}
        with Path(path).open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = {"code", "name", "parent"} - set(reader.fieldnames or ())
            if missing:
                absent = ", ".join(sorted(missing))
                raise RegistryError(f"{path}: the header must be code,name,parent (no {absent})")
            for record in reader:
                line = reader.line_num
                try:
                    row = _csv_row(record)
                except RegistryError as exc:
                    report.refused.append((line, str(exc)))
                    continue
                if str(row.code) in rows:
                    report.refused.append(
                        (line, f"{row.code} already appears on line {rows[str(row.code)][0]}")
                    )
                    continue
                rows[str(row.code)] = (line, row)
        ordered = sorted(rows.values(), key=lambda item: (item[1].code.level, str(item[1].code)))
        async with self.store.sessions() as session:
            wanted = {str(r.parent) for _, r in ordered if r.parent and str(r.parent) not in rows}
            stored = set(await repo.existing_agencies(session, wanted))
        known = stored | set(rows)
        accepted: list[repo.AgencyRow] = []
        refused_codes: set[str] = set()
        for line, row in ordered:
            parent = str(row.parent) if row.parent else None
            if parent is not None and (parent not in known or parent in refused_codes):
                why = (
                    "was refused"
                    if parent in refused_codes
                    else "is neither registered nor in the file"
                )
                report.refused.append((line, f"{row.code}: the parent {parent} {why}"))
                refused_codes.add(str(row.code))
                continue
            accepted.append(row)
        total = len(accepted)
        for start in range(0, total, IMPORT_BATCH):
            batch = accepted[start : start + IMPORT_BATCH]
            async with self.store.transaction() as session:
                added, updated, unchanged = await repo.upsert_agencies(session, batch)
            report.added += added
            report.updated += updated
            report.unchanged += unchanged
            if progress is not None:
                progress(start + len(batch), total)
        report.refused.sort()
        self._cache.clear()
        return report

    # --- principals -----------------------------------------------------------------------

    async def add_gateway(self, name: str, patterns: list[str]) -> Principal:
        """A provincial gateway: one broker user acting for every agency its patterns match."""
        if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise RegistryError(f"{name!r}: a gateway name uses letters, digits, '-', '_' or '.'")
        if AgencyCode.is_valid(name):
            raise RegistryError(f"{name!r} is an agency identifier; name the gateway otherwise")
        if not patterns:
            raise RegistryError(f"{name}: a gateway serves at least one pattern")
        for pattern in patterns:
            try:
                validate_pattern(pattern)
            except PatternError as exc:
                raise RegistryError(str(exc)) from None
        async with self.store.transaction() as session:
            principal = await repo.get_principal(session, name)
            if principal is None:
                principal = await repo.add_principal(session, name, "gateway", patterns)
            elif principal.kind != "gateway":
                raise RegistryError(f"{name} is already the principal of an agency")
            elif {s.pattern for s in principal.scopes} != set(patterns):
                serves = ", ".join(s.pattern for s in principal.scopes)
                raise RegistryError(
                    f"gateway {name} already serves {serves}; remove it first to change that"
                )
            else:
                principal.active = True
        self._cache.clear()
        return principal

    async def remove_gateway(self, name: str) -> None:
        """Deactivate a gateway's principal: it can no longer act for anyone."""
        async with self.store.transaction() as session:
            principal = await repo.get_principal(session, name)
            if principal is None or principal.kind != "gateway":
                raise RegistryError(f"{name} is not a registered gateway")
            principal.active = False
        self._cache.clear()

    async def get_principal(self, username: str) -> Principal | None:
        async with self.store.sessions() as session:
            return await repo.get_principal(session, username)

    async def record_access(
        self, principal: str, action: str, detail: str | None = None, *, actor: str
    ) -> None:
        """Keep a record of a change of broker access (who ran it, when, what)."""
        async with self.store.transaction() as session:
            await repo.record_access_change(session, principal, action, detail, actor)

    async def access_history(self, principal: str) -> list[AccessChange]:
        async with self.store.sessions() as session:
            return await repo.access_changes(session, principal)

    async def list_gateways(self) -> list[Principal]:
        return await self.list_principals("gateway")

    async def list_principals(self, kind: str | None = None) -> list[Principal]:
        async with self.store.sessions() as session:
            return await repo.list_principals(session, kind)

    async def may_act_for(self, username: str, code: str) -> bool:
        """May broker user ``username`` send as agency ``code``? (Its scope, and ``code``
        registered and active.)"""
        key = ("act", username, code)
        cached = self._cache.get(key)
        if cached is _MISSING:
            async with self.store.sessions() as session:
                principal = await repo.get_principal(session, username)
            cached = (
                principal is not None
                and principal.active
                and any(topic_matches(s.pattern, code) for s in principal.scopes)
            )
            self._cache.put(key, cached)
        return bool(cached) and await self.is_active(code)

    # --- lookups --------------------------------------------------------------------------

    async def is_active(self, code: str) -> bool:
        """Is ``code`` a registered agency that has not been deactivated?"""
        key = ("active", code)
        cached = self._cache.get(key)
        if cached is _MISSING:
            async with self.store.sessions() as session:
                agency = await repo.get_agency(session, code)
            cached = agency is not None and agency.active
            self._cache.put(key, cached)
        return bool(cached)

    # --- certificates ---------------------------------------------------------------------

    async def register_certificate(self, code: str, certificate: x509.Certificate) -> None:
        """Bind a certificate to an agency (several may be bound at once, for rotation)."""
        async with self.store.transaction() as session:
            if await repo.get_agency(session, code) is None:
                raise RegistryError(f"{code} is not registered")
            existing = await repo.find_certificate(session, fingerprint(certificate))
            if existing is not None:
                if existing.agency_code != code:
                    raise RegistryError(
                        f"this certificate is already registered for {existing.agency_code}"
                    )
                return
            await repo.add_certificate(session, code, certificate)
        self._cache.clear()

    async def is_bound(self, fingerprint: str, code: str, at: datetime | None = None) -> bool:
        """Is the certificate with this SHA-256 fingerprint registered for ``code``, not
        revoked, and valid at ``at`` (now by default)?"""
        key = ("cert", fingerprint.lower())
        cached = self._cache.get(key)
        if cached is _MISSING:
            async with self.store.sessions() as session:
                row = await repo.find_certificate(session, fingerprint)
            cached = (
                None
                if row is None
                else _Registered(
                    row.agency_code, row.revoked, _utc(row.not_before), _utc(row.not_after)
                )
            )
            self._cache.put(key, cached)
        if not isinstance(cached, _Registered):
            return False
        moment = at or datetime.now(UTC)
        return (
            cached.agency == code
            and not cached.revoked
            and cached.not_before <= moment <= cached.not_after
        )


@dataclass(frozen=True, slots=True)
class _Registered:
    """What the registry knows of a certificate, cached by fingerprint."""

    agency: str
    revoked: bool
    not_before: datetime
    not_after: datetime


def _utc(moment: datetime) -> datetime:
    """SQLite hands timestamps back without their zone; they were stored in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _code(value: str) -> AgencyCode:
    try:
        return AgencyCode.parse(value.strip())
    except AgencyCodeError as exc:
        raise RegistryError(str(exc)) from None


def _parent(code: AgencyCode, parent: str | None) -> AgencyCode | None:
    """A parent must be one of the units above ``code`` in the identifier hierarchy."""
    if not parent:
        return None
    parent_code = _code(parent)
    if parent_code not in code.parents:
        above = ", ".join(str(p) for p in code.parents) or "none: it is a level-1 body"
        raise RegistryError(f"{code}: {parent_code} is not above it (units above: {above})")
    return parent_code


def _csv_row(record: dict[str, str | None]) -> repo.AgencyRow:
    raw_code = (record.get("code") or "").strip()
    name = (record.get("name") or "").strip()
    code = _code(raw_code)
    if not name:
        raise RegistryError(f"{code}: the name is empty")
    return repo.AgencyRow(code, name, _parent(code, (record.get("parent") or "").strip()))
