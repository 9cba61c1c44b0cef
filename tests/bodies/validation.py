"""The validator: routing, and every check refusing what it must, in DESIGN order."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy import select

from backbone import edxml
from backbone.broker import topology
from backbone.edxml.factory import new_status
from backbone.store.models import EventRecord

from ..conftest import SENDER
from ..worlds import Received, World, document

RECIPIENTS = ("000.00.00.H41", "000.00.15.H41", "000.00.00.H14")
OTHER = "000.00.00.H14"  # a registered agency that did not send


async def agencies(world: World, *codes: str) -> None:
    for code in codes or (SENDER, RECIPIENTS[0], RECIPIENTS[1]):
        await world.add_agency(code)


async def test_one_package_reaches_three_inboxes_byte_identical(world: World) -> None:
    await agencies(world, SENDER, *RECIPIENTS)
    package = document(recipients=RECIPIENTS)
    signed = world.signers["G22"].sign(package)
    await world.submit(signed)
    backbone_ids = set()
    for code in RECIPIENTS:
        (copy,) = await world.received(topology.inbox(code), 1)
        assert copy.body == signed and copy.routing_key == code and copy.type == "edoc"
        assert copy.headers["x-sender"] == SENDER
        assert copy.headers["x-edxml-document-id"] == package.document_id
        assert copy.headers["x-signer"] == world.signers["G22"].fingerprint
        assert "x-accepted-at" in copy.headers
        backbone_ids.add(copy.headers["x-backbone-id"])
    assert len(backbone_ids) == 1 and None not in backbone_ids
    await world.routed(package, *RECIPIENTS)  # the tracker recorded each copy
    assert len(await world.events(package.document_id, "accepted")) == 1


async def test_a_gateway_receives_for_the_agencies_its_pattern_serves(world: World) -> None:
    await world.add_agency(SENDER)
    for code in ("000.00.15.H41", "000.00.15.H42"):
        await world.add_agency(code, inbox=False)
    await world.add_gateway("lgsp-h41", ["*.*.*.H41"])
    for_h41 = world.signers["G22"].sign(document(recipients=["000.00.15.H41"]))
    await world.submit(for_h41)
    (copy,) = await world.received(topology.gateway_queue("lgsp-h41"), 1)
    assert copy.body == for_h41 and copy.routing_key == "000.00.15.H41"
    # an agency without a user that no gateway serves: its copies wait in its own inbox
    for_h42 = world.signers["G22"].sign(document(recipients=["000.00.15.H42"]))
    await world.submit(for_h42)
    (waiting,) = await world.received(topology.inbox("000.00.15.H42"), 1)
    assert waiting.body == for_h42
    await world.empty(topology.gateway_queue("lgsp-h41"))


async def test_a_copy_no_queue_takes_is_undeliverable_and_the_sender_is_told(
    world: World,
) -> None:
    await agencies(world, SENDER, RECIPIENTS[0], OTHER)
    await world.unroute(OTHER)  # its binding removed after check 7 passed
    package = document(recipients=[RECIPIENTS[0], OTHER])
    await world.submit(world.signers["G22"].sign(package))
    notice = await rejected(world, "delivery", "undeliverable")
    assert notice.headers["x-rejection-value"] == OTHER
    assert len(await world.received(topology.inbox(RECIPIENTS[0]), 1)) == 1

    async def states() -> bool:
        found = [await world.delivery(package, code) for code in (RECIPIENTS[0], OTHER)]
        return [d.transport_state if d else None for d in found] == ["routed", "undeliverable"]

    await world.until(states, "one copy routed, one undeliverable")


async def rejected(world: World, check: str, code: str) -> Received:
    """The sender's 02 from the backbone, naming the check and the fault."""
    (status,) = await world.received(topology.inbox(SENDER), 1)
    package = status.package
    assert isinstance(package, edxml.StatusPackage)
    assert package.header.status_code == "02" and package.sender == "000.00.00.B00"
    assert (status.headers["x-rejection-check"], status.headers["x-rejection-code"]) == (
        check,
        code,
    )
    description = package.header.description or ""
    assert check in description and code in description
    return status


Submit = Callable[[World], Awaitable[None]]


def _good(world: World, signer: str = "G22", **fields: object) -> bytes:
    fields.setdefault("recipients", [RECIPIENTS[0]])
    return world.signers[signer].sign(document(**fields))


def _signed_by(signer: str) -> Submit:
    """A good package signed with one of the test PKI's unfit certificates."""
    return lambda world: world.submit(_good(world, signer))


async def _too_large(world: World) -> None:
    checks = world.validator.checks
    checks.limits = dataclasses.replace(checks.limits, max_package_bytes=1000)
    await world.submit(_good(world))


async def _status_too_large(world: World) -> None:
    status = new_status(
        reporter=SENDER, document=document(), status_code="03", description="x" * 2000
    )
    world.settings.max_status_bytes = 1000
    await world.submit(edxml.build(status), type="status")


async def _status_labelled_edoc(world: World) -> None:
    """A status published as another type: refused right after the parse."""
    status = edxml.build(new_status(reporter=SENDER, document=document(), status_code="03"))
    world.settings.max_status_bytes = len(status) - 1
    await world.submit(status, type="edoc")


async def _other_sender(world: World) -> None:
    await world.add_agency(OTHER)  # the package says another agency sent it
    await world.submit(world.signers["G22"].sign(document(sender=OTHER, recipients=[SENDER])))


async def _too_many(world: World) -> None:
    world.settings.max_recipients = 1
    await world.submit(_good(world, recipients=[RECIPIENTS[0], RECIPIENTS[1]]))


CASES: dict[str, tuple[str, str, Submit]] = {
    "too-large": ("1-size", "too-large", _too_large),
    "status-too-large": ("1-size", "too-large", _status_too_large),
    "status-labelled-edoc-too-large": ("1-size", "too-large", _status_labelled_edoc),
    "missing-user-id": (
        "1-principal",
        "missing-user-id",
        lambda w: w.submit(_good(w), user_id=None),
    ),
    "not-a-principal": (  # the broker lets its administrator use any routing key
        "1-principal",
        "principal-not-allowed",
        lambda w: w.submit(_good(w), user="guest", routing_key=SENDER),
    ),
    "malformed": ("2-parse", "malformed", lambda w: w.submit(b"<edXML><unclosed></edXML>")),
    "invalid": (
        "3-structure",
        "bad-agency-id",
        lambda w: w.submit(edxml.build(document(recipients=["null"]), validate=False)),
    ),
    "sender-mismatch": ("4-sender", "sender-mismatch", _other_sender),
    "altered": (
        "5-signature",
        "digest-mismatch",
        lambda w: w.submit(_good(w).replace(b"7816", b"7817", 1)),
    ),
    "unsigned": (
        "5-signature",
        "unsigned",
        lambda w: w.submit(edxml.build(document(recipients=[RECIPIENTS[0]]))),
    ),
    "untrusted": ("5-signature", "untrusted-chain", _signed_by("other-ca")),
    "revoked": ("5-signature", "certificate-revoked", _signed_by("revoked")),
    "expired": ("5-signature", "certificate-expired", _signed_by("expired")),
    "not-yet-valid": ("5-signature", "certificate-not-yet-valid", _signed_by("future")),
    "not-for-signing": ("5-signature", "bad-key-usage", _signed_by("no-signing")),
    "another-agency's-key": ("5-signature", "wrong-agency", _signed_by("H41")),
    "unknown-recipient": (
        "7-recipients",
        "unknown-recipient",
        lambda w: w.submit(_good(w, recipients=[RECIPIENTS[0], "000.00.99.H41"])),
    ),
    "too-many-recipients": ("7-recipients", "too-many-recipients", _too_many),
}


@pytest.mark.parametrize("case", CASES)
async def test_each_failure_is_rejected_to_the_sender_and_never_routed(
    world: World, case: str
) -> None:
    check, code, submit = CASES[case]
    await agencies(world)
    await submit(world)
    await rejected(world, check, code)
    await world.empty(topology.inbox(RECIPIENTS[0]), topology.inbox(RECIPIENTS[1]))

    async def recorded() -> bool:  # and the tracker keeps the reason
        async with world.store.sessions() as session:
            rows = await session.execute(
                select(EventRecord).where(
                    EventRecord.kind == "rejected", EventRecord.reason_code == code
                )
            )
            return len(rows.scalars().all()) == 1

    await world.until(recorded, f"the rejection {code} recorded")


async def test_a_duplicate_document_id_is_rejected_but_a_redelivery_is_not(
    world: World,
) -> None:
    await agencies(world)
    package = document(recipients=[RECIPIENTS[0]])
    first = world.signers["G22"].sign(package)
    await world.submit(first)
    await world.submit(first)  # the same submission again: delivered again, not refused
    copies = await world.received(topology.inbox(RECIPIENTS[0]), 2)
    assert [c.body for c in copies] == [first, first]  # both routed...
    assert copies[0].headers["x-backbone-id"] == copies[1].headers["x-backbone-id"]  # ...as one
    header = package.header.model_copy(update={"subject": "Another letter, same id"})
    await world.submit(world.signers["G22"].sign(package.model_copy(update={"header": header})))
    notice = await rejected(world, "6-duplicate", "duplicate")
    assert notice.headers["x-rejection-value"] == package.document_id
    await world.empty(topology.inbox(RECIPIENTS[0]))


async def test_a_status_is_forwarded_to_the_sender_of_its_document(world: World) -> None:
    await agencies(world)
    package = document(recipients=[RECIPIENTS[0]])
    await world.submit(world.signers["G22"].sign(package))
    await world.routed(package, RECIPIENTS[0])
    await world.report(package, RECIPIENTS[0], "01")
    (forwarded,) = await world.received(topology.inbox(SENDER), 1)
    assert forwarded.type == "status" and forwarded.status_code == "01"
    assert forwarded.package.document_id == package.document_id
    assert forwarded.headers["x-sender"] == RECIPIENTS[0]
    assert forwarded.headers["x-status-code"] == "01"
