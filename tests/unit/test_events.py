"""Lifecycle events: one model per kind, the same JSON on the wire as schemas/asyncapi.yaml
documents kind by kind."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from backbone import events

SCHEMAS = yaml.safe_load(
    (Path(__file__).resolve().parents[2] / "schemas" / "asyncapi.yaml").read_text()
)["components"]["schemas"]
EXAMPLES: list[events.Event] = [
    events.AcceptedEvent(backbone_id="b", sender="000.00.00.G22", document_id="d"),
    events.RoutedEvent(backbone_id="b", sender="s", document_id="d", recipient="r"),
    events.UndeliverableEvent(backbone_id="b", sender="s", recipient="r", description="x"),
    events.RejectedEvent(sender="s", check="2-parse", code="malformed", path="", description="x"),
    events.StatusEvent(
        reporter="000.00.00.H41",
        addressee="000.00.00.G22",
        document_id="d",
        status_code="01",
        occurred_at=datetime(2026, 12, 3, tzinfo=UTC),
        package="PGVkWE1MLz4=",
    ),
]


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: e.kind.value)
def test_each_kind_reads_back_as_itself(event: events.Event) -> None:
    assert events.messages(event.body()) == [event]
    assert events.routing_key(event) == f"event.{event.kind.value}"


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: e.kind.value)
def test_each_kind_has_the_fields_the_contract_documents(event: events.Event) -> None:
    common, own = SCHEMAS["eventCommon"], SCHEMAS[f"{event.kind.value}Event"]["allOf"][1]
    documented = set(common["properties"]) | set(own["properties"])
    fields = {info.alias or name for name, info in type(event).model_fields.items()}
    assert fields == documented
    assert set(own["required"]) <= set(json.loads(event.body()))


def test_a_status_keeps_its_wire_names() -> None:
    wire = json.loads(EXAMPLES[-1].body())
    assert (wire["recipient"], wire["sender"]) == ("000.00.00.H41", "000.00.00.G22")


@pytest.mark.parametrize(
    "body",
    [b'{"kind": "accepted"}', b'{"kind": "bogus", "event_id": "x"}', b"[]", b"not json"],
)
def test_what_is_not_an_event_is_refused(body: bytes) -> None:
    with pytest.raises(ValidationError):
        events.messages(body)


def test_a_batch_reads_back_as_its_events_and_one_event_alone_as_itself() -> None:
    batch = events.EventBatch(events=EXAMPLES)
    assert events.messages(batch.body()) == EXAMPLES
    assert events.routing_key(batch) == "event.batch"
    assert events.messages(EXAMPLES[0].body()) == [EXAMPLES[0]]  # as workers before batching


@pytest.mark.parametrize(
    "body",
    [b'{"kind": "batch", "events": []}', b'{"kind": "batch"}', b'{"kind": "batch", "events": [1]}'],
)
def test_a_batch_of_nothing_or_of_no_events_is_refused(body: bytes) -> None:
    with pytest.raises(ValidationError):
        events.messages(body)


def test_the_contract_documents_the_batch_and_the_copies_of_an_accepted_document() -> None:
    spec = yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "schemas" / "asyncapi.yaml").read_text()
    )
    payload = spec["components"]["messages"]["eventBatch"]["payload"]
    assert payload["properties"]["events"]["maxItems"] == events.MAX_BATCH
    assert {"batch", "event"} <= set(spec["channels"]["tracker"]["messages"])
    accepted = events.AcceptedEvent(
        backbone_id="b", sender="s", document_id="d", routed=("r1", "r2"), undeliverable=("r3",)
    )
    copies = accepted.copies()
    assert [(type(c).__name__, c.recipient) for c in copies] == [
        ("RoutedEvent", "r1"),
        ("RoutedEvent", "r2"),
        ("UndeliverableEvent", "r3"),
    ]
    assert [c.event_id for c in copies] == [f"{accepted.event_id}:{n}" for n in range(3)]
    longest = events.AcceptedEvent(
        event_id="x" * 64, backbone_id="b", sender="s", document_id="d", routed=("r",)
    )
    assert len(longest.copies()[0].event_id) <= 64  # hashed: the column holds 64
