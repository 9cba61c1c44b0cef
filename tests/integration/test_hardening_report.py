"""Issue 13: the report survives odd stored data and counts days in the configured zone;
every outcome is found by the id the sender knows."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from backbone.report import Reporter, deadline, period
from backbone.store import Store
from backbone.store import repository as repo
from backbone.store.models import Delivery, Document, EventRecord

pytestmark = pytest.mark.integration
HANOI = ZoneInfo("Asia/Ho_Chi_Minh")


def a_document(sender: str, **fields: object) -> Document:
    values: dict[str, object] = {
        "id": str(uuid.uuid4()),
        "sender": sender,
        "document_id": f"{sender},2026/12/02,{uuid.uuid4().hex[:8]}",
        "content_sha256": "0" * 64,
        "size": 1,
        "accepted_at": datetime(2026, 12, 2, 3, 0, tzinfo=UTC),
    }
    values.update(fields)
    return Document(**values)


def test_a_deadline_past_the_calendar_is_none_not_an_overflow() -> None:
    assert deadline(date(9999, 12, 31), False, HANOI, []) is None
    assert deadline(date(9999, 12, 31), True, HANOI, []) is None
    assert deadline(date(9999, 12, 30), False, HANOI, [date(9999, 12, 31)]) is None


def test_days_are_counted_in_the_configured_zone_around_midnight() -> None:
    since, until = period(date(2026, 12, 2), date(2026, 12, 2), "Asia/Ho_Chi_Minh")
    assert since == datetime(2026, 12, 1, 17, 0, tzinfo=UTC)  # Hanoi's midnight
    assert until == datetime(2026, 12, 2, 17, 0, tzinfo=UTC)
    before_midnight_utc = datetime(2026, 12, 1, 23, 30, tzinfo=UTC)  # 06:30 on the 2nd there
    assert since <= before_midnight_utc < until
    assert period(date(1, 1, 1), date(9999, 12, 31), HANOI) == (
        datetime.min.replace(tzinfo=UTC),
        datetime.max.replace(tzinfo=UTC),
    )


async def test_a_far_future_promulgation_date_does_not_break_the_report(store: Store) -> None:
    sender = f"{uuid.uuid4().int % 900 + 100:03d}.00.00.K98"
    async with store.transaction() as session:
        session.add(a_document(sender, promulgation_date=date(9999, 12, 31), priority=0))
        session.add(a_document(sender, promulgation_date=date(9999, 12, 31), priority=3))
        session.add(a_document(sender, promulgation_date=date(2026, 11, 2), priority=0))
    since, until = period(date(2026, 12, 1), date(9999, 12, 31), HANOI)
    async with store.sessions() as session:
        report = await Reporter(session).build(since, until, sender)
    assert report.sent == {sender: 3}
    assert report.late == 1  # the one of 2026-11-02; the 9999 ones cannot be late


async def test_undeliverable_copies_are_counted_apart_from_received(store: Store) -> None:
    sender = f"{uuid.uuid4().int % 900 + 100:03d}.00.00.K97"
    recipient = sender.replace("K97", "K96")
    document = a_document(sender)
    async with store.transaction() as session:
        session.add(document)
        await session.flush()
        session.add(
            Delivery(document_pk=document.id, recipient=recipient, transport_state="undeliverable")
        )
    async with store.sessions() as session:
        report = await Reporter(session).build(*period(date(2026, 12, 2), date(2026, 12, 2), HANOI))
    assert report.undeliverable.get(recipient) == 1
    assert recipient not in report.received


async def test_every_outcome_is_found_by_the_id_the_sender_knows(store: Store) -> None:
    sender = f"{uuid.uuid4().int % 900 + 100:03d}.00.00.K95"
    accepted = a_document(sender)
    refused_id = f"{sender},2026/12/02,refused"
    message_id = uuid.uuid4().hex
    async with store.transaction() as session:
        session.add(accepted)
        for document_id in (refused_id, f"message:{message_id}"):
            session.add(
                EventRecord(
                    event_id=uuid.uuid4().hex,
                    kind="rejected",
                    sender=sender,
                    edxml_document_id=document_id,
                    reason_code="schema",
                )
            )
    async with store.sessions() as session:
        found = await repo.find_outcomes(session, accepted.document_id)
        assert [d.id for d in found.documents] == [accepted.id] and found.rejections == []
        found = await repo.find_outcomes(session, accepted.id)
        assert [d.id for d in found.documents] == [accepted.id]
        found = await repo.find_outcomes(session, refused_id)
        assert found.documents == [] and [e.reason_code for e in found.rejections] == ["schema"]
        found = await repo.find_outcomes(session, message_id)
        assert len(found.rejections) == 1
