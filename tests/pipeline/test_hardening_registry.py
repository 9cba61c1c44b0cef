"""Issue 13, the registry's side, through the commands an operator runs against a real
broker: every registered agency has the one queue that serves it (1, 2), user limits (17),
nothing half-written (20), a gateway never takes a user that is not its own and is unbound
when removed (21), repeated removals and exports that change nothing (26)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from aiormq.exceptions import ChannelAccessRefused
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import select

from backbone import edxml
from backbone.broker import topology
from backbone.client import AsyncGateway
from backbone.store import repository as repo
from backbone.store.models import Delivery

from ..conftest import SENDER
from ..worlds import document
from .conftest import Invoke, Pipeline
from .helpers import drain, ready_count, wait_for
from .test_access import channel_of, consume_one
from .test_access_cli import fresh_code, password_in

pytestmark = pytest.mark.pipeline
README = Path(__file__).resolve().parents[2] / "README.md"


async def _routed(pipeline: Pipeline, document_id: str, recipients: set[str]) -> bool:
    """The tracker has recorded a delivery for each recipient: every copy was confirmed."""
    async with pipeline.validator.store.sessions() as session:
        found = (await repo.find_outcomes(session, document_id)).documents
        if not found:
            return False
        rows = await session.execute(select(Delivery).where(Delivery.document_pk == found[0].id))
        return {d.recipient for d in rows.scalars()} >= recipients


def _bound(pipeline: Pipeline) -> set[tuple[str, str]]:
    return set(pipeline.broker.mgmt.bindings(pipeline.vhost, topology.DELIVER))


async def test_an_imported_agency_has_an_inbox_and_its_documents_wait_there(
    pipeline: Pipeline, cli: Invoke, tmp_path: Path
) -> None:
    await pipeline.add_agency(SENDER)
    code = "000.00.31.H14"
    csv = tmp_path / "agencies.csv"
    csv.write_text(f"code,name,parent\n{code},Xã Một,\n", encoding="utf-8")
    status, stdout, stderr = await cli("agency", "import", csv)
    assert status == 0, stderr
    assert (topology.inbox(code), code) in _bound(pipeline)
    assert "1 agency without a broker user" in stdout
    letter = document(recipients=[code])
    async with AsyncGateway(pipeline.url(SENDER), username=SENDER) as sender:
        await sender.send(pipeline.signers["G22"].sign(letter))
    await wait_for(lambda: _routed(pipeline, letter.document_id, {code}), 20)
    assert await ready_count(pipeline.url(), topology.inbox(code)) == 1
    assert await ready_count(pipeline.url(), topology.UNROUTABLE) == 0


async def test_an_agency_with_its_own_user_under_a_gateway_gets_one_copy_and_one_01(
    pipeline: Pipeline, cli: Invoke
) -> None:
    await pipeline.add_agency(SENDER)
    code, gateway = fresh_code(), f"lgsp-{uuid.uuid4().hex[:6]}"
    status, stdout, _ = await cli("agency", "add", code, "--name", "Sở Nội vụ")
    assert status == 0
    password = password_in(stdout, code)
    status, stdout, stderr = await cli("gateway", "add", gateway, "--serves", "*.*.*.H41")
    assert status == 0, stderr
    status, stdout, _ = await cli("agency", "list", "--json")
    assert f'"served_by": "{topology.inbox(code)}"' in stdout

    letter = document(recipients=[code])
    async with AsyncGateway(pipeline.url(SENDER), username=SENDER) as sender:
        await sender.send(pipeline.signers["G22"].sign(letter))
    await wait_for(lambda: _routed(pipeline, letter.document_id, {code}), 20)
    assert await ready_count(pipeline.url(), topology.gateway_queue(gateway)) == 0
    url = pipeline.broker.url(pipeline.vhost, code, password)
    async with AsyncGateway(url, username=code) as recipient:  # answers 01 by itself
        async for delivery in recipient.receive(topology.inbox(code), count=1):
            assert delivery.recipient == code
            await delivery.ack()
    assert await ready_count(pipeline.url(), topology.inbox(code)) == 0
    (notice,) = await drain(pipeline, topology.inbox(SENDER), SENDER, count=1)
    assert isinstance(notice.package, edxml.StatusPackage)
    assert notice.package.header.status_code == "01"
    assert await ready_count(pipeline.url(), topology.inbox(SENDER)) == 0


async def test_provisioning_sets_user_limits_and_access_check_shows_them(
    pipeline: Pipeline, cli: Invoke
) -> None:
    code = fresh_code()
    assert (await cli("agency", "add", code, "--name", "Sở Y tế"))[0] == 0
    assert pipeline.broker.mgmt.user_limits(code) == {"max-connections": 20, "max-channels": 200}
    status, stdout, _ = await cli("access", "check", code)
    assert status == 0 and "limits: max-channels 200, max-connections 20" in stdout
    pipeline.broker.mgmt.clear_user_limit(code, "max-connections")
    status, stdout, _ = await cli("access", "check", code)
    assert status == 1 and "max-connections is none, expected 20" in stdout


async def test_a_failed_agency_add_writes_nothing(
    pipeline: Pipeline, cli: Invoke, tmp_path: Path
) -> None:
    status, _, stderr = await cli("agency", "add", " 000.00.00.H42 ", "--name", "x")
    assert status == 1 and stderr.startswith("error: ") and "Traceback" not in stderr
    assert await pipeline.registry.list_principals() == []
    assert await pipeline.registry.list_agencies(include_inactive=True) == []

    cert = tmp_path / "g22.pem"
    cert.write_bytes(pipeline.signers["G22"].certificates[0].public_bytes(Encoding.PEM))
    first = fresh_code()
    assert (await cli("agency", "add", first, "--name", "Một", "--cert", cert))[0] == 0
    other = fresh_code()
    status, _, stderr = await cli("agency", "add", other, "--name", "Hai", "--cert", cert)
    assert status == 1 and f"already registered for {first}" in stderr
    assert await pipeline.registry.get_agency(other) is None
    assert await pipeline.registry.get_principal(other) is None
    assert pipeline.broker.mgmt.user(other) is None


async def test_gateway_add_refuses_the_workers_user_and_remove_unbinds(
    pipeline: Pipeline, cli: Invoke
) -> None:
    # the workers' user of another configuration (not BACKBONE_AMQP_URL's)
    old = f"backbone-{uuid.uuid4().hex[:6]}"
    await pipeline.registry.record_access(old, "provisioned", "the workers", actor="test")
    status, _, stderr = await cli("gateway", "add", old, "--serves", "*.*.*.H41")
    assert status == 1 and "provisioned for itself" in stderr
    assert await pipeline.registry.get_principal(old) is None

    gateway, served = f"lgsp-{uuid.uuid4().hex[:6]}", "000.00.17.H41"
    await pipeline.add_agency(served, inbox=False)
    assert (await cli("gateway", "add", gateway, "--serves", "*.*.*.H41"))[0] == 0
    assert (topology.gateway_queue(gateway), served) in _bound(pipeline)
    status, stdout, _ = await cli("gateway", "remove", gateway)
    assert status == 0 and f"gateway {gateway} deactivated" in stdout
    bound = _bound(pipeline)
    assert not any(queue == topology.gateway_queue(gateway) for queue, _ in bound)
    assert (topology.inbox(served), served) in bound  # its documents wait in its own inbox
    status, stdout, _ = await cli("gateway", "remove", gateway)
    assert status == 0 and "nothing changed" in stdout


async def test_repeated_removal_and_export_without_out_change_nothing(
    pipeline: Pipeline, cli: Invoke
) -> None:
    code = fresh_code()
    assert (await cli("agency", "add", code, "--name", "Sở Xây dựng"))[0] == 0
    assert (await cli("agency", "remove", code))[0] == 0
    history = [h.id for h in await pipeline.registry.access_history(code)]
    status, stdout, _ = await cli("agency", "remove", code)
    assert status == 0 and "nothing changed" in stdout
    assert [h.id for h in await pipeline.registry.access_history(code)] == history
    status, _, stderr = await cli("topology", "export")
    assert status == 1 and "--out FILE" in stderr


async def test_a_passive_declare_shows_counts_never_messages_as_readme_says(
    pipeline: Pipeline,
) -> None:
    """Point 19 is documented, not changed: README's 'known property' must stay true."""
    other = "000.00.00.H14"
    for code in (SENDER, other):
        await pipeline.add_agency(code)
    letter = document(recipients=[other])
    async with AsyncGateway(pipeline.url(SENDER), username=SENDER) as sender:
        await sender.send(pipeline.signers["G22"].sign(letter))
    await wait_for(lambda: _routed(pipeline, letter.document_id, {other}), 20)
    async with channel_of(pipeline, SENDER) as channel:
        declared = await channel.declare_queue(topology.inbox(other), passive=True)
        assert declared.declaration_result.message_count == 1
    async with channel_of(pipeline, SENDER) as channel:
        with pytest.raises(ChannelAccessRefused):
            await consume_one(channel, topology.inbox(other))
    assert "passive `queue.declare` needs no permission" in README.read_text()
