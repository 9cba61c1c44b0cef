"""Lifecycle and compliance reports, as governments report them, in SQL aggregates.

Figures for a period (documents accepted in it): documents sent and received per agency
and per level; agencies answering with 5 or more distinct statuses, 3 to 4, 1 to 2, none
(and which); median and 95th-percentile time from routing to 01 and to 03; deliveries
stuck in a non-final state; rejections by reason; and documents sent late under Decision
28 (due the day they are promulgated, by noon of the next working day at the latest;
urgent ones, Priority 1 and above, the same day).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, and_, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from .agency import AgencyCode
from .store.models import Agency, Delivery, Document, EventRecord
from .store.repository import under_pattern

ANSWERS = ("01", "02", "03", "04", "05", "06", "15", "16")  # statuses a recipient sends


@dataclass
class Percentiles:
    count: int = 0
    median_s: float | None = None
    p95_s: float | None = None


@dataclass
class Report:
    since: datetime
    until: datetime
    under: str | None
    documents: int = 0
    sent: dict[str, int] = field(default_factory=dict)
    received: dict[str, int] = field(default_factory=dict)
    undeliverable: dict[str, int] = field(default_factory=dict)  # copies no queue took
    sent_by_level: dict[str, int] = field(default_factory=dict)
    received_by_level: dict[str, int] = field(default_factory=dict)
    answering: dict[str, int] = field(default_factory=dict)  # "5+", "3-4", "1-2", "none"
    not_answering: list[str] = field(default_factory=list)
    to_01: Percentiles = field(default_factory=Percentiles)
    to_03: Percentiles = field(default_factory=Percentiles)
    stuck: int = 0
    stuck_examples: list[dict[str, str]] = field(default_factory=list)
    rejections: dict[str, int] = field(default_factory=dict)
    late: int = 0
    late_examples: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["since"], data["until"] = self.since.isoformat(), self.until.isoformat()
        return data


def level_bucket(level: int) -> str:
    return "level 1" if level == 1 else "level 2" if level == 2 else "levels 3-4"


def answering_bucket(distinct: int) -> str:
    return "5+" if distinct >= 5 else "3-4" if distinct >= 3 else "1-2" if distinct >= 1 else "none"


def deadline(
    promulgated: date, urgent: bool, zone: ZoneInfo, holidays: Iterable[date]
) -> datetime | None:
    """Decision 28: urgent ones the same day; the others by noon of the next working day.
    None when the deadline is past the calendar's end (a date like 9999-12-31 stored before
    the rules refused it): such a document cannot be late, and the report goes on."""
    try:
        if urgent:
            local = datetime.combine(promulgated + timedelta(days=1), time(0, 0), zone)
            return local.astimezone(UTC)
        closed = set(holidays)
        day = promulgated + timedelta(days=1)
        while day.weekday() >= 5 or day in closed:
            day += timedelta(days=1)
        return datetime.combine(day, time(12, 0), zone).astimezone(UTC)
    except OverflowError:
        return None


def period(first: date, last: date, zone: str | ZoneInfo) -> tuple[datetime, datetime]:
    """The days ``first`` to ``last`` (included) as the configured zone counts them: from
    its midnight starting ``first`` to its midnight ending ``last``, in UTC. Total: the
    calendar's ends clamp to the earliest and latest times there are."""
    where = zone if isinstance(zone, ZoneInfo) else ZoneInfo(zone)

    def midnight(day: date, after: bool) -> datetime:
        try:
            moment = datetime.combine(day + timedelta(days=1) if after else day, time(0), where)
            return moment.astimezone(UTC)
        except OverflowError:
            return datetime.max.replace(tzinfo=UTC) if after else datetime.min.replace(tzinfo=UTC)

    return midnight(first, False), midnight(last, True)


def _seconds(dialect: str, later: Any, earlier: Any) -> Any:
    """Seconds between two timestamp columns, in the dialect's own arithmetic."""
    if dialect == "postgresql":
        return func.extract("epoch", later - earlier)
    return (func.julianday(later) - func.julianday(earlier)) * 86400.0


class Reporter:
    def __init__(
        self,
        session: AsyncSession,
        zone: str = "Asia/Ho_Chi_Minh",
        holidays: Iterable[date] = (),
        stuck_after: timedelta = timedelta(hours=72),
    ) -> None:
        self.session = session
        self.zone = ZoneInfo(zone)
        self.holidays = list(holidays)
        self.stuck_after = stuck_after
        self.dialect = session.get_bind().dialect.name

    async def build(
        self,
        since: datetime,
        until: datetime,
        under: str | None = None,
        now: datetime | None = None,
    ) -> Report:
        report = Report(since, until, under)
        scope = AgencyCode.parse(under) if under else None
        in_period = and_(Document.accepted_at >= since, Document.accepted_at < until)

        def within(column: Any) -> ColumnElement[bool]:
            if scope is None:
                return literal(True)
            return column.like(under_pattern(scope)) | (column == str(scope))  # type: ignore[no-any-return]

        report.documents = await self._scalar(
            select(func.count()).select_from(Document).where(in_period, within(Document.sender))
        )
        report.sent = await self._pairs(
            select(Document.sender, func.count())
            .where(in_period, within(Document.sender))
            .group_by(Document.sender)
        )
        routed = and_(in_period, Delivery.transport_state == "routed", within(Delivery.recipient))
        report.received = await self._pairs(
            select(Delivery.recipient, func.count())
            .join(Document)
            .where(routed)
            .group_by(Delivery.recipient)
        )
        report.undeliverable = await self._pairs(
            select(Delivery.recipient, func.count())
            .join(Document)
            .where(
                in_period,
                Delivery.transport_state == "undeliverable",
                within(Delivery.recipient),
            )
            .group_by(Delivery.recipient)
        )
        for target, column, table in (
            (report.sent_by_level, Document.sender, None),
            (report.received_by_level, Delivery.recipient, Delivery),
        ):
            query = select(Agency.level, func.count()).select_from(Document)
            if table is not None:
                query = query.join(Delivery).where(routed)
            else:
                query = query.where(in_period, within(Document.sender))
            rows = await self.session.execute(
                query.join(Agency, Agency.code == column).group_by(Agency.level)
            )
            for level, count in rows:
                target[level_bucket(level)] = target.get(level_bucket(level), 0) + count
        await self._answering(report, routed)
        report.to_01 = await self._percentiles(Delivery.arrived_at, routed)
        report.to_03 = await self._percentiles(Delivery.accepted_at, routed)
        await self._stuck(report, routed, now or datetime.now(UTC))
        report.rejections = await self._pairs(
            select(EventRecord.reason_code, func.count())
            .where(
                EventRecord.kind == "rejected",
                EventRecord.recorded_at >= since,
                EventRecord.recorded_at < until,
                within(EventRecord.sender),
            )
            .group_by(EventRecord.reason_code)
        )
        await self._late(report, in_period, within(Document.sender))
        return report

    async def _scalar(self, query: Any) -> int:
        return int((await self.session.execute(query)).scalar_one() or 0)

    async def _pairs(self, query: Any) -> dict[str, int]:
        return {str(key): int(count) for key, count in await self.session.execute(query)}

    async def _answering(self, report: Report, routed: ColumnElement[bool]) -> None:
        """Each agency that received documents in the period: how many distinct statuses it
        sent about them."""
        receivers = select(Delivery.recipient).join(Document).where(routed).distinct()
        answered = await self._pairs(
            select(EventRecord.recipient, func.count(func.distinct(EventRecord.status_code)))
            .join(
                Delivery,
                and_(
                    Delivery.document_pk == EventRecord.document_pk,
                    Delivery.recipient == EventRecord.recipient,
                ),
            )
            .join(Document, Document.id == EventRecord.document_pk)
            .where(routed, EventRecord.kind == "status", EventRecord.status_code.in_(ANSWERS))
            .group_by(EventRecord.recipient)
        )
        everyone = [str(code) for code in (await self.session.execute(receivers)).scalars()]
        report.answering = {bucket: 0 for bucket in ("5+", "3-4", "1-2", "none")}
        for agency in everyone:
            report.answering[answering_bucket(answered.get(agency, 0))] += 1
        report.not_answering = sorted(a for a in everyone if a not in answered)

    async def _percentiles(self, reached: Any, routed: ColumnElement[bool]) -> Percentiles:
        """Median and 95th percentile by offset into the sorted durations (no bulk load)."""
        duration = _seconds(self.dialect, reached, Delivery.routed_at).label("duration")
        condition = and_(routed, reached.is_not(None), Delivery.routed_at.is_not(None))
        count = await self._scalar(
            select(func.count()).select_from(Delivery).join(Document).where(condition)
        )
        result = Percentiles(count)
        if count:

            async def at(fraction: float) -> float:
                offset = min(count - 1, int(fraction * count))
                query = (
                    select(duration)
                    .join(Document)
                    .where(condition)
                    .order_by(duration)
                    .offset(offset)
                    .limit(1)
                )
                return float((await self.session.execute(query)).scalar_one())

            result.median_s, result.p95_s = await at(0.5), await at(0.95)
        return result

    async def _stuck(self, report: Report, routed: ColumnElement[bool], now: datetime) -> None:
        condition = and_(
            routed,
            Delivery.routed_at < now - self.stuck_after,
            (Delivery.status_code.is_(None)) | Delivery.status_code.not_in(("02", "06")),
        )
        report.stuck = await self._scalar(
            select(func.count()).select_from(Delivery).join(Document).where(condition)
        )
        rows = await self.session.execute(
            select(
                Document.document_id, Delivery.recipient, Delivery.status_code, Delivery.routed_at
            )
            .join(Document)
            .where(condition)
            .order_by(Delivery.routed_at)
            .limit(20)
        )
        report.stuck_examples = [
            {"document": d, "recipient": r, "status": s or "-", "routed_at": str(at)}
            for d, r, s, at in rows
        ]

    async def _late(
        self, report: Report, in_period: ColumnElement[bool], scope: ColumnElement[bool]
    ) -> None:
        urgent = Document.priority >= 1
        groups = await self.session.execute(
            select(Document.promulgation_date, func.coalesce(urgent, False))
            .where(in_period, scope, Document.promulgation_date.is_not(None))
            .distinct()
        )
        for promulgated, is_urgent in groups.all():
            assert promulgated is not None
            due = deadline(promulgated, bool(is_urgent), self.zone, self.holidays)
            if due is None:
                continue
            which = urgent if is_urgent else (Document.priority.is_(None) | (Document.priority < 1))
            late = and_(
                in_period,
                scope,
                Document.promulgation_date == promulgated,
                which,
                Document.accepted_at > due,
            )
            report.late += await self._scalar(
                select(func.count()).select_from(Document).where(late)
            )
            if len(report.late_examples) < 20:
                rows = await self.session.execute(
                    select(Document.document_id).where(late).limit(20)
                )
                report.late_examples.extend(str(r) for r in rows.scalars())
        report.late_examples = report.late_examples[:20]
