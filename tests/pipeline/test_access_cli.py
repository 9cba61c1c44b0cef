"""The access commands as an operator runs them, against a real broker: agency and gateway
add (idempotent, rotation), remove (connections closed, inbox kept, recorded), init (the
workers' and operators' users), access check, topology export."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
from aio_pika.abc import AbstractChannel
from aiormq.exceptions import ChannelAccessRefused

from backbone.broker import definitions, topology
from backbone.config import get_settings

from ..conftest import SENDER
from ..worlds import document
from .conftest import WORKERS, Invoke, Pipeline
from .helpers import ready_count, wait_for
from .test_access import (
    channel_of,
    connection_refused,
    consume_one,
    publish,
    watched_connection,
)

pytestmark = pytest.mark.pipeline


def fresh_code() -> str:
    """An identifier no earlier test gave a broker user (users outlive virtual hosts)."""
    n = uuid.uuid4().int
    return f"000.{n % 90 + 10:02d}.{n // 90 % 90 + 10:02d}.H41"


def password_in(stdout: str, user: str) -> str:
    match = re.search(rf"password of {re.escape(user)} \(shown once, store it now\): (\S+)", stdout)
    assert match, stdout
    return match.group(1)


async def test_agency_add_is_idempotent_and_rotates_the_password(
    pipeline: Pipeline, cli: Invoke
) -> None:
    code = fresh_code()
    status, stdout, stderr = await cli("agency", "add", code, "--name", "Sở TT&TT")
    assert status == 0, stderr
    assert f"broker user {code}: user created, routing keys set, permissions set" in stdout
    first = password_in(stdout, code)
    async with channel_of_password(pipeline, code, first) as channel:
        await consume_one(channel, topology.inbox(code))
    stored = pipeline.broker.mgmt.user(code)

    status, stdout, _ = await cli("agency", "add", code, "--name", "Sở TT&TT")
    assert status == 0 and f"broker access of {code} unchanged" in stdout
    assert "password of" not in stdout
    assert pipeline.broker.mgmt.user(code) == stored  # the same salted hash: nothing reset

    _, closed = await watched_connection(pipeline, code, first)
    status, stdout, _ = await cli("agency", "add", code, "--name", "Sở TT&TT", "--rotate-password")
    assert status == 0 and "password set; 1 open connection closed" in stdout
    second = password_in(stdout, code)
    assert second != first
    await asyncio.wait_for(closed.wait(), 10)
    assert await connection_refused(pipeline, code, first)
    assert not await connection_refused(pipeline, code, second)
    history = await pipeline.registry.access_history(code)
    assert [h.action for h in history] == ["provisioned", "password-rotated"]


@asynccontextmanager
async def channel_of_password(
    pipeline: Pipeline, user: str, password: str
) -> AsyncIterator[AbstractChannel]:
    """``channel_of`` for a user whose password is not the tests' own."""
    connection = await aio_pika.connect(pipeline.broker.url(pipeline.vhost, user, password))
    try:
        yield await connection.channel()
    finally:
        await connection.close()


async def test_agency_remove_closes_refuses_keeps_the_inbox_and_is_recorded(
    pipeline: Pipeline, cli: Invoke
) -> None:
    await pipeline.add_agency(SENDER)
    code = fresh_code()
    status, stdout, _ = await cli("agency", "add", code, "--name", "Xã Nghi Phong")
    assert status == 0
    password = password_in(stdout, code)
    letter = pipeline.signers["G22"].sign(document(recipients=[code]))
    async with channel_of(pipeline, SENDER) as channel:
        await publish(channel, topology.SUBMIT, SENDER, letter, user_id=SENDER)
    await wait_for(lambda: _waiting(pipeline, code), 15)

    _, closed = await watched_connection(pipeline, code, password)
    status, stdout, stderr = await cli("agency", "remove", code)
    assert status == 0, stderr
    assert f"{code}: broker user deleted, 1 open connection closed" in stdout
    assert f"1 message kept in {topology.inbox(code)}" in stdout
    await asyncio.wait_for(closed.wait(), 10)
    assert await connection_refused(pipeline, code, password)
    assert await ready_count(pipeline.url(), topology.inbox(code)) == 1  # still there
    (*_, last) = await pipeline.registry.access_history(code)
    assert last.action == "revoked" and "1 message kept" in (last.detail or "")
    assert not await pipeline.registry.is_active(code)

    status, stdout, _ = await cli("access", "check", code)
    assert status == 0  # removed and without access: as it should be
    assert "removed in the registry" in stdout and "broker user: none" in stdout


async def _waiting(pipeline: Pipeline, code: str) -> bool:
    return await ready_count(pipeline.url(), topology.inbox(code)) > 0


async def test_access_check_says_what_an_agency_and_a_gateway_can_do(
    pipeline: Pipeline, cli: Invoke
) -> None:
    code = fresh_code()
    gateway = f"lgsp-{uuid.uuid4().hex[:6]}"
    status, stdout, _ = await cli("agency", "add", code, "--name", "Sở Tư pháp")
    password = password_in(stdout, code)
    assert (await cli("gateway", "add", gateway, "--serves", "*.*.*.H41"))[0] == 0

    status, stdout, _ = await cli("access", "check", code)
    print(stdout)  # the closing note quotes it
    assert status == 0
    assert "agency principal (active in the registry)" in stdout
    assert f"routing keys on edoc.submit: ^{re.escape(code)}$\n" in stdout
    can, cannot = stdout.split("  cannot:")
    assert "publish to: edoc.submit\n" in can
    assert f"consume from: {topology.inbox(code)}\n" in can
    assert "declare, delete or bind any exchange or queue" in cannot
    for exchange in (topology.DELIVER, topology.EVENTS):
        assert exchange in cannot.split("publish to:")[1].split("\n")[0]
    assert topology.VALIDATE in cannot and "matches what the backbone grants it" in stdout

    status, stdout, _ = await cli("access", "check", gateway, "--json")
    print(stdout)
    report = json.loads(stdout)
    assert status == 0 and report["differences"] == []
    assert report["may_publish_to"] == [topology.SUBMIT]
    assert topology.gateway_queue(gateway) in report["may_consume_from"]
    assert topology.inbox(code) in report["may_consume_from"]  # an agency of H41
    assert [h["action"] for h in report["history"]] == ["provisioned"]

    # an operator widens the agency's rights by hand: the check says so, `agency add` repairs
    # and whoever connected meanwhile loses what that gave: its connection is closed
    mgmt = pipeline.broker.mgmt
    mgmt.set_permissions(pipeline.vhost, code, configure=".*", write=".*", read=".*")
    status, stdout, _ = await cli("access", "check", code)
    assert status == 1 and "differs from its grant" in stdout
    assert "configure is '.*', expected ''" in stdout
    _, closed = await watched_connection(pipeline, code, password)
    status, stdout, _ = await cli("agency", "add", code, "--name", "Sở Tư pháp")
    assert "permissions set; 1 open connection closed" in stdout
    await asyncio.wait_for(closed.wait(), 10)
    assert (await cli("access", "check", code))[0] == 0

    status, _, stderr = await cli("access", "check", "nobody-at-all")
    assert status == 1 and "neither a principal nor a broker user" in stderr


async def test_a_gateway_remove_revokes_its_user(pipeline: Pipeline, cli: Invoke) -> None:
    gateway = f"lgsp-{uuid.uuid4().hex[:6]}"
    status, stdout, _ = await cli("gateway", "add", gateway, "--serves", "*.*.*.H42")
    password = password_in(stdout, gateway)
    stored = pipeline.broker.mgmt.user(gateway)
    status, stdout, _ = await cli("gateway", "add", gateway, "--serves", "*.*.*.H42")  # again
    assert status == 0 and f"broker access of {gateway} unchanged" in stdout
    assert "password of" not in stdout and pipeline.broker.mgmt.user(gateway) == stored
    status, _, stderr = await cli("gateway", "add", gateway, "--serves", "*.*.*.H43")
    assert status == 1 and "already serves *.*.*.H42" in stderr
    status, stdout, _ = await cli("gateway", "remove", gateway)
    assert status == 0 and "broker user deleted" in stdout
    assert await connection_refused(pipeline, gateway, password)
    status, _, stderr = await cli("gateway", "add", WORKERS, "--serves", "*.*.*.H41")
    assert status == 1 and "the workers' user" in stderr


async def test_init_gives_the_workers_and_the_operators_users_of_their_own(
    pipeline: Pipeline, cli: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    mgmt = pipeline.broker.mgmt
    operators = f"operators-{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv("BACKBONE_OPERATORS_USER", operators)
    get_settings.cache_clear()
    try:
        status, stdout, stderr = await cli("init")
        assert status == 0, stderr
        assert f"broker access of {WORKERS} unchanged (the workers)" in stdout
        assert f"broker user {operators}: user created, permissions set" in stdout
        password = password_in(stdout, operators)
        status, stdout, _ = await cli("init")
        assert status == 0 and "password of" not in stdout
        assert f"broker access of {operators} unchanged" in stdout
        assert (await cli("access", "check", WORKERS))[0] == 0
        assert (await cli("access", "check", operators))[0] == 0

        # the dashboard works for the operators, and no message is theirs to read
        api = httpx.URL(mgmt.url).copy_with(path="/api/queues", username=None, password=None)
        queues = httpx.get(str(api), auth=(operators, password))
        assert queues.status_code == 200
        assert topology.VALIDATE in {q["name"] for q in queues.json()}
        async with channel_of_password(pipeline, operators, password) as channel:
            with pytest.raises(ChannelAccessRefused):
                await consume_one(channel, topology.VALIDATE)
    finally:
        mgmt.delete_user(operators)


async def test_topology_export_reproduces_the_virtual_host(
    pipeline: Pipeline, cli: Invoke, tmp_path: Path
) -> None:
    code = fresh_code()
    assert (await cli("agency", "add", code, "--name", "Sở Xây dựng"))[0] == 0
    out = tmp_path / "deploy" / "definitions.json"
    status, stdout, _ = await cli("topology", "export", "--out", out)
    assert status == 0 and f"{out}:" in stdout
    text = out.read_text()
    assert "password_hash" not in text
    exported = json.loads(text)
    users = {u["name"] for u in exported["users"]}
    assert {code, WORKERS} <= users and "guest" not in users  # no administrator
    queues = {q["name"] for q in exported["queues"]}
    assert {topology.VALIDATE, topology.TRACKER, topology.inbox(code)} <= queues

    # load it, under other names, into the same broker: the same topology and grants
    mgmt = pipeline.broker.mgmt
    copy_vhost = f"copy-{uuid.uuid4().hex[:8]}"
    renamed = {user: f"copy-{uuid.uuid4().hex[:6]}" for user in users}
    mgmt.import_definitions(_renamed(exported, pipeline.vhost, copy_vhost, renamed))
    try:
        assert {q["name"] for q in mgmt.queues(copy_vhost)} == queues
        original = mgmt.permissions(pipeline.vhost, code) or {}
        copied = mgmt.permissions(copy_vhost, renamed[code]) or {}
        assert [original[k] for k in ("configure", "write", "read")] == [
            copied[k] for k in ("configure", "write", "read")
        ]
        assert (
            mgmt.topic_permissions(copy_vhost, renamed[code])[0]["write"]
            == (mgmt.topic_permissions(pipeline.vhost, code)[0]["write"])
        )
    finally:
        mgmt.delete_vhost(copy_vhost)
        for user in renamed.values():
            mgmt.delete_user(user)


def _renamed(
    document: dict[str, Any], vhost: str, to: str, users: dict[str, str]
) -> dict[str, Any]:
    """The definitions with the virtual host and the users renamed (users are global)."""
    copy: dict[str, Any] = json.loads(json.dumps(document))
    copy["vhosts"] = [{**v, "name": to} for v in copy["vhosts"] if v["name"] == vhost]
    copy["users"] = [{**u, "name": users[u["name"]]} for u in copy["users"]]
    for section in ("permissions", "topic_permissions"):
        copy[section] = [{**p, "user": users[p["user"]], "vhost": to} for p in copy[section]]
    for section in definitions.SCOPED:
        copy[section] = [{**item, "vhost": to} for item in copy[section]]
    return copy


async def test_a_broker_user_the_backbone_did_not_create_is_not_taken_silently(
    pipeline: Pipeline, cli: Invoke
) -> None:
    code = fresh_code()
    mgmt = pipeline.broker.mgmt
    mgmt.add_user(code, "someone-elses", "administrator")
    try:
        status, _, stderr = await cli("agency", "add", code, "--name", "Sở Y tế")
        assert status == 1 and "that the backbone did not create" in stderr
        assert mgmt.user(code)["tags"] == ["administrator"]  # type: ignore[index]  # untouched
        status, stdout, _ = await cli(
            "agency", "add", code, "--name", "Sở Y tế", "--rotate-password"
        )
        assert (
            status == 0
            and "password set" in stdout
            and "tags" not in stdout.split("password set")[0]
        )
        assert mgmt.user(code)["tags"] == []  # type: ignore[index]
        assert (await cli("access", "check", code))[0] == 0
    finally:
        mgmt.delete_user(code)
    status, _, stderr = await cli("gateway", "add", "guest", "--serves", "#")
    assert status == 1 and "'guest' is" in stderr and "choose another name" in stderr
