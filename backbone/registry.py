"""The agency registry: who exists, who may act for whom, which certificates sign for whom.

Workers ask it the same questions for every message, so answers are cached for a short,
configurable time (``BACKBONE_REGISTRY_TTL``, seconds): a deactivation or a new
certificate takes effect everywhere within that time, and at once in the process that
made the change.
"""

from __future__ import annotations

import csv
import re
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from .agency import AgencyCode, AgencyCodeError, PatternError, topic_matches, validate_pattern
from .broker import topology
from .errors import BackboneError
from .signing.pki import fingerprint
from .store import Store
from .store import repository as repo
from .store.models import AccessChange, Agency, Principal

_MISSING = object()
IMPORT_BATCH = 2000
NAME_LENGTH = 500  # an agency's name (the column's size)
GATEWAY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # a broker user and a queue name
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


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
    """The agencies (code, name, parent, active), the principals that may act for them
    (agency systems and gateways, with their topic patterns), the certificates bound to
    each agency, and the record of access changes: all kept in the store, changed and read
    through this one object.

    The validator asks three questions per message, so their answers are cached for
    ``ttl`` seconds (``BACKBONE_REGISTRY_TTL``): ``may_act_for`` (may this broker user send
    as this agency), ``is_active`` (is this recipient a registered, active agency) and
    ``is_bound`` (is this certificate the agency's). A change made through this object
    clears its cache at once; one made by another process is seen within ``ttl``. Lists
    and single reads (``get_agency``, ``list_gateways``...) always go to the store.

    Used by the validator's checks, by the CLI (``backbone agency``, ``gateway``,
    ``access`` and the topology commands: changes, CSV import, the gateways' delivery
    queues, the access record) and by the demo and the benchmark to set up their world.
    """

    def __init__(
        self, store: Store, *, ttl: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        self._cache = _TtlCache(ttl, clock)

    # --- agencies -------------------------------------------------------------------------

    async def add_agency(
        self,
        code: str,
        name: str,
        *,
        parent: str | None = None,
        principal: bool = True,
        certificates: Iterable[x509.Certificate] = (),
    ) -> Agency:
        """Register (or re-activate and rename) an agency with the certificates it signs
        with; with ``principal``, also the broker user that acts for it alone (its
        username is the identifier). All or nothing: every check comes before the one
        transaction that writes."""
        agency = _code(code)
        parent_code = _parent(agency, parent)
        clean = agency_name(name, str(agency))
        certificates = list(certificates)
        async with self.store.transaction() as session:
            if parent_code is not None and await repo.get_agency(session, str(parent_code)) is None:
                raise RegistryError(f"{code}: the parent {parent_code} is not registered")
            existing = await repo.get_principal(session, code) if principal else None
            if existing is not None and existing.kind != "agency":
                raise RegistryError(f"{code} is already the name of a gateway")
            new_certificates = []
            for certificate in certificates:
                bound = await repo.find_certificate(session, fingerprint(certificate))
                if bound is not None and bound.agency_code != code:
                    raise RegistryError(
                        f"{code}: this certificate ({certificate.subject.rfc4514_string()}) "
                        f"is already registered for {bound.agency_code}; nothing was changed"
                    )
                if bound is None:
                    new_certificates.append(certificate)
            await repo.upsert_agencies(session, [repo.AgencyRow(agency, clean, parent_code)])
            if principal:
                if existing is None:
                    await repo.add_principal(session, code, "agency", [code])
                elif not existing.active:
                    existing.active = True
            for certificate in new_certificates:
                await repo.add_certificate(session, code, certificate)
            row = await repo.get_agency(session, code)
        self._cache.clear()
        assert row is not None
        return row

    async def deactivate_agency(self, code: str) -> bool:
        """Deactivate, with its own principal: it can no longer send or receive; its
        history stays. False when it was already inactive (nothing changed)."""
        agency = str(_code(code))
        async with self.store.transaction() as session:
            row = await repo.get_agency(session, agency)
            if row is None:
                raise RegistryError(f"{code} is not registered")
            principal = await repo.get_principal(session, agency)
            if not row.active and (principal is None or not principal.active):
                return False
            await repo.set_agency_active(session, agency, False)
            await repo.set_principal_active(session, agency, False)
        self._cache.clear()
        return True

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
        for line, record in _csv_records(Path(path)):
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
        gateway_name(name)
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

    async def remove_gateway(self, name: str) -> bool:
        """Deactivate a gateway's principal: it can no longer act for anyone. False when
        it was already inactive (nothing changed)."""
        async with self.store.transaction() as session:
            principal = await repo.get_principal(session, name)
            if principal is None or principal.kind != "gateway":
                raise RegistryError(f"{name} is not a registered gateway")
            if not principal.active:
                return False
            principal.active = False
        self._cache.clear()
        return True

    async def delivery_queues(self) -> dict[str, str]:
        """Every registered agency (active or not) and the one queue that receives its
        deliveries (``topology.serving_queue``)."""
        async with self.store.sessions() as session:
            agencies = await repo.list_agencies(session, include_inactive=True)
            principals = await repo.list_principals(session)
        own = {p.username for p in principals if p.kind == "agency" and p.active}
        gateways = [
            (p.username, [s.pattern for s in p.scopes])
            for p in principals
            if p.kind == "gateway" and p.active
        ]
        return {a.code: topology.serving_queue(a.code, a.code in own, gateways) for a in agencies}

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
    """An identifier exactly as given: `` 000.00.00.H42 `` is not one (it would become a
    broker user and a queue name with the spaces)."""
    try:
        return AgencyCode.parse(value)
    except AgencyCodeError as exc:
        raise RegistryError(str(exc)) from None


def agency_name(name: str, code: str) -> str:
    """An agency's name, stripped: not empty, at most NAME_LENGTH characters, no control
    characters (it is shown in terminals and reports)."""
    clean = name.strip()
    if not clean:
        raise RegistryError(f"{code}: the name is empty")
    if len(clean) > NAME_LENGTH:
        raise RegistryError(f"{code}: the name has {len(clean)} characters, at most {NAME_LENGTH}")
    if _CONTROL.search(clean):
        raise RegistryError(f"{code}: the name contains a control character")
    return clean


def gateway_name(name: str) -> str:
    """A gateway's name is a broker user and part of a queue name: 1 to 64 ASCII letters,
    digits, '.', '_' or '-', starting with a letter or digit."""
    if not GATEWAY_NAME.fullmatch(name):
        shown = repr(name if len(name) <= 70 else name[:70] + "…")
        raise RegistryError(
            f"{shown} is not a gateway name: 1 to 64 ASCII letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def _parent(code: AgencyCode, parent: str | None) -> AgencyCode | None:
    """A parent must be one of the units above ``code`` in the identifier hierarchy."""
    if not parent:
        return None
    parent_code = _code(parent)
    if parent_code not in code.parents:
        above = ", ".join(str(p) for p in code.parents) or "none: it is a level-1 body"
        raise RegistryError(f"{code}: {parent_code} is not above it (units above: {above})")
    return parent_code


CSV_HEADER = ("code", "name", "parent")
_DELIMITERS = {";": "';'", "\t": "a tab", "|": "'|'"}


def _csv_records(path: Path) -> list[tuple[int, dict[str, str] | str]]:
    """(line, record) of each row after the header, or (line, why it is refused) for a
    row with too few or too many columns. A file that cannot be read as this CSV at all
    (not UTF-8, another delimiter, other columns, a quote not closed) is refused whole,
    naming the file and the line."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RegistryError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise RegistryError(
            f"{path}:{line}: not UTF-8 (byte 0x{data[exc.start]:02x}); save the file as UTF-8"
        ) from None
    reader = csv.reader(text.splitlines(keepends=True), strict=True)
    records: list[tuple[int, dict[str, str] | str]] = []
    line = 1
    try:
        header = [h.strip() for h in next(reader, [])]
        _check_header(path, header)
        while True:
            line = reader.line_num + 1
            fields = next(reader, None)
            if fields is None:
                break
            if not any(f.strip() for f in fields):
                continue  # a blank line
            if len(fields) != len(CSV_HEADER):
                records.append((line, _columns(len(fields))))
                continue
            records.append((line, dict(zip(CSV_HEADER, fields, strict=True))))
    except csv.Error as exc:
        raise RegistryError(f"{path}:{line}: {_csv_fault(exc)}") from None
    return records


def _check_header(path: Path, header: list[str]) -> None:
    if tuple(header) == CSV_HEADER:
        return
    joined = ",".join(header)
    for delimiter, shown in _DELIMITERS.items():
        if tuple(h.strip() for h in joined.split(delimiter)) == CSV_HEADER:
            raise RegistryError(
                f"{path}:1: the columns are separated by {shown}; use ',' "
                "(the header must be code,name,parent)"
            )
    missing = [c for c in CSV_HEADER if c not in header]
    extra = [h for h in header if h not in CSV_HEADER]
    said = [f"no {', '.join(missing)}"] if missing else []
    said += [f"unexpected {', '.join(repr(e[:40]) for e in extra)}"] if extra else []
    said += [] if said else ["the columns are in another order"]
    raise RegistryError(f"{path}:1: the header must be code,name,parent ({'; '.join(said)})")


def _columns(count: int) -> str:
    hint = " (a ',' inside a name needs the name in double quotes)" if count > 3 else ""
    return f"{count} column{'' if count == 1 else 's'}, expected 3: code,name,parent{hint}"


def _csv_fault(exc: csv.Error) -> str:
    text = str(exc)
    if "unexpected end of data" in text or "EOF" in text:
        return "a quoted field is not closed (a '\"' is missing)"
    return f"not valid CSV ({text})"


def _csv_row(record: dict[str, str] | str) -> repo.AgencyRow:
    if isinstance(record, str):
        raise RegistryError(record)
    code = _code(record["code"].strip())
    name = agency_name(record["name"], str(code))
    return repo.AgencyRow(code, name, _parent(code, record["parent"].strip()))
