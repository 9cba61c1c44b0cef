"""The report on a generated dataset whose answers are known in advance, on both engines."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import pytest

from backbone.agency import AgencyCode
from backbone.report import Reporter, deadline
from backbone.store import Store
from backbone.store import repository as repo
from backbone.store.models import Delivery, Document, EventRecord

pytestmark = pytest.mark.integration

SENDER = "000.00.00.K99"
LEVEL1 = [f"000.00.00.K{n:02d}" for n in range(1, 96)]  # 95 ministries and provinces
LOWER = ["000.00.01.K01", "000.00.02.K01", "000.01.01.K01", "001.01.01.K01"]  # levels 2, 2, 3, 4
MONDAY = datetime(2020, 1, 6, 3, 0, tzinfo=UTC)  # 10:00 in Hanoi
FIVE, THREE, ONE = ("01", "03", "04", "05", "06"), ("01", "03", "04"), ("01",)


def answers(agency: str) -> tuple[str, ...]:
    """K01-K50 answer five statuses, K51-K80 three, K81-K85 one, K86-K95 none; the two
    level-2 units five, the level-3 and level-4 units none."""
    if agency in LOWER[:2]:
        return FIVE
    if agency in LOWER[2:]:
        return ()
    n = int(agency[-2:])
    return FIVE if n <= 50 else THREE if n <= 80 else ONE if n <= 85 else ()


async def load(store: Store) -> dict[str, list[float]]:
    """The dataset; returns the durations to 01 and to 03 (seconds) it contains."""
    async with store.transaction() as session:
        rows = [repo.AgencyRow(AgencyCode(c), c, None) for c in (SENDER, *LEVEL1)]
        rows += [repo.AgencyRow(AgencyCode(c), c, AgencyCode(c).root) for c in LOWER]
        await repo.upsert_agencies(session, rows)
        documents = {
            "on time": Document(
                id=str(uuid.uuid4()),
                sender=SENDER,
                document_id=f"report-1-{uuid.uuid4()}",
                promulgation_date=date(2020, 1, 6),
                priority=0,
                accepted_at=MONDAY,
            ),
            "late": Document(
                id=str(uuid.uuid4()),
                sender=SENDER,
                document_id=f"report-2-{uuid.uuid4()}",
                promulgation_date=date(2020, 1, 6),
                priority=0,
                accepted_at=datetime(2020, 1, 8, 6, 0, tzinfo=UTC),
            ),
            "urgent, next morning": Document(
                id=str(uuid.uuid4()),
                sender=SENDER,
                document_id=f"report-3-{uuid.uuid4()}",
                promulgation_date=date(2020, 1, 6),
                priority=2,
                accepted_at=datetime(2020, 1, 7, 1, 0, tzinfo=UTC),
            ),
        }
        durations: dict[str, list[float]] = {"01": [], "03": []}
        for document in documents.values():
            assert document.accepted_at is not None
            document.content_sha256, document.size = "0" * 64, 1000
            document.submitted_at = document.accepted_at
            session.add(document)
        await session.flush()
        for index, agency in enumerate([*LEVEL1, *LOWER]):
            for name, document in documents.items():
                routed = document.accepted_at
                assert routed is not None
                delivery = Delivery(
                    document_pk=document.id,
                    recipient=agency,
                    transport_state="routed",
                    routed_at=routed,
                )
                session.add(delivery)
                if name != "on time":
                    continue
                for step, code in enumerate(answers(agency)):
                    at = routed + timedelta(minutes=index + 1 + 10 * step)
                    column = {
                        "01": "arrived_at",
                        "03": "accepted_at",
                        "04": "assigned_at",
                        "05": "processing_at",
                        "06": "done_at",
                    }[code]
                    setattr(delivery, column, at)
                    delivery.status_code = code
                    if code in durations:
                        durations[code].append((at - routed).total_seconds())
                    session.add(
                        EventRecord(
                            event_id=uuid.uuid4().hex,
                            document_pk=document.id,
                            sender=SENDER,
                            edxml_document_id=document.document_id,
                            recipient=agency,
                            kind="status",
                            status_code=code,
                            recorded_at=at,
                        )
                    )
        for reason, count in (("digest-mismatch", 3), ("duplicate", 2)):
            for _ in range(count):
                session.add(
                    EventRecord(
                        event_id=uuid.uuid4().hex,
                        sender=SENDER,
                        kind="rejected",
                        reason_code=reason,
                        recorded_at=MONDAY,
                    )
                )
    return durations


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def test_every_figure_of_the_report(store: Store) -> None:
    durations = await load(store)
    async with store.sessions() as session:
        reporter = Reporter(session, "Asia/Ho_Chi_Minh", [], timedelta(hours=72))
        report = await reporter.build(
            datetime(2020, 1, 1, tzinfo=UTC),
            datetime(2020, 2, 1, tzinfo=UTC),
            under=None,
            now=datetime(2020, 2, 1, tzinfo=UTC),
        )
    assert report.documents == 3
    assert report.sent == {SENDER: 3}
    assert report.received == {a: 3 for a in [*LEVEL1, *LOWER]}
    assert report.sent_by_level == {"level 1": 3}
    assert report.received_by_level == {"level 1": 285, "level 2": 6, "levels 3-4": 6}
    assert report.answering == {"5+": 52, "3-4": 30, "1-2": 5, "none": 12}
    assert report.not_answering == sorted([*LEVEL1[85:], *LOWER[2:]])
    assert report.to_01.count == 87 and report.to_03.count == 82
    assert report.to_01.median_s == pytest.approx(percentile(durations["01"], 0.5))
    assert report.to_01.p95_s == pytest.approx(percentile(durations["01"], 0.95))
    assert report.to_03.median_s == pytest.approx(percentile(durations["03"], 0.5))
    assert report.to_03.p95_s == pytest.approx(percentile(durations["03"], 0.95))
    assert report.stuck == (30 + 5 + 10 + 2) + 2 * 99  # not 02/06 after 72 h
    assert report.rejections == {"digest-mismatch": 3, "duplicate": 2}
    assert report.late == 2 and len(report.late_examples) == 2

    async with store.sessions() as session:  # a province's subtree only
        scoped = await Reporter(session).build(
            datetime(2020, 1, 1, tzinfo=UTC),
            datetime(2020, 2, 1, tzinfo=UTC),
            under="000.00.00.K01",
        )
    assert scoped.received == {a: 3 for a in ["000.00.00.K01", *LOWER]}
    assert scoped.documents == 0  # its sender is elsewhere


def test_decision_28_deadlines() -> None:
    from zoneinfo import ZoneInfo

    hanoi = ZoneInfo("Asia/Ho_Chi_Minh")
    friday = date(2020, 1, 10)
    # a normal document of a Friday is due on Monday at noon (05:00 UTC)
    assert deadline(friday, False, hanoi, []) == datetime(2020, 1, 13, 5, 0, tzinfo=UTC)
    # unless Monday is a holiday
    assert deadline(friday, False, hanoi, [date(2020, 1, 13)]) == datetime(
        2020, 1, 14, 5, 0, tzinfo=UTC
    )
    # an urgent one is due the same day (midnight in Hanoi)
    assert deadline(friday, True, hanoi, []) == datetime(2020, 1, 10, 17, 0, tzinfo=UTC)
