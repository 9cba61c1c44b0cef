"""Nothing lost: a validator killed mid-stream, and a message that crashes it every time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import aio_pika
import pytest

from backbone import edxml
from backbone.broker import topology
from backbone.client import AsyncGateway
from backbone.workers.checks import Accepted, Submission

from ..conftest import SENDER, make_document
from .conftest import Pipeline
from .helpers import raw_drain, ready_count, submit, wait_for

pytestmark = pytest.mark.pipeline
RAW, SDK = "000.00.00.H41", "000.00.00.H14"  # one inbox read raw, one through the SDK


def start_validator(pipeline: Pipeline, log: Path | None = None) -> subprocess.Popen[bytes]:
    """``backbone run validator`` as a process; its JSON log into ``log`` if given."""
    settings = pipeline.settings
    env = dict(os.environ)
    env.update(
        {
            "BACKBONE_AMQP_URL": settings.amqp_url,
            "BACKBONE_DATABASE_URL": settings.database_url,
            "BACKBONE_TRUST_BUNDLE": str(settings.trust_bundle),
            "BACKBONE_CRL_FILES": json.dumps([str(p) for p in settings.crl_files]),
            "BACKBONE_REGISTRY_TTL": "0",
            "BACKBONE_DELIVERY_LIMIT": str(settings.delivery_limit),
            "BACKBONE_BACKBONE_KEY": str(settings.backbone_key),
            "BACKBONE_BACKBONE_CERT": str(settings.backbone_cert),
        }
    )
    with log.open("wb") if log is not None else open(os.devnull, "wb") as out:
        return subprocess.Popen(  # the child keeps its own copy of the file
            [sys.executable, "-m", "backbone", "run", "validator", "--prefetch", "64"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def warnings_in(log: Path) -> list[str]:
    """What a validator's log says went wrong (for an assertion's message)."""
    return [line for line in log.read_text().splitlines() if '"level": "info"' not in line][-10:]


async def test_a_validator_killed_mid_stream_loses_nothing(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    await pipeline.stop("validator")  # this test runs validators as processes it can kill
    # and needs no tracker: on SQLite (one writer at a time, a 30 s busy timeout) a tracker
    # recording the flood of events can hold off the validator's acceptance commits for
    # longer than STOP_TIMEOUT under a loaded machine, and what it holds is then handed back
    await pipeline.stop("tracker")
    for code in (SENDER, RAW, SDK):
        await pipeline.add_agency(code)
    signer = pipeline.signers["G22"]
    packages = [
        signer.sign(
            make_document(recipients=[RAW, SDK], document_id=f"crash-{i}-{uuid.uuid4().hex[:6]}")
        )
        for i in range(500)
    ]
    async with AsyncGateway(pipeline.url(SENDER), username=SENDER) as sender:
        for body in packages:
            await sender.send(body)

    first = start_validator(pipeline)
    await wait_for(lambda: _at_least(pipeline, RAW, 30), 60)
    first.send_signal(signal.SIGKILL)  # mid-stream: hundreds still queued or in flight
    first.wait(timeout=30)
    routed_before_the_kill = await ready_count(pipeline.url(), topology.inbox(RAW))
    assert routed_before_the_kill < 500  # it really died mid-stream

    log = tmp_path / "second-validator.log"
    second = start_validator(pipeline, log)
    try:
        # the backlog taken: counting inbox messages alone is not enough, since what the
        # first validator routed but never acked is routed again (duplicates count too)
        await wait_for(lambda: _backlog_taken(pipeline), 180)
    finally:
        second.send_signal(signal.SIGTERM)  # it finishes what it holds, then stops
        second.wait(timeout=60)
    handed_back = await ready_count(pipeline.url(), topology.VALIDATE)
    assert handed_back == 0, warnings_in(log)  # it finished what it held

    raw = await raw_drain(pipeline, topology.inbox(RAW))
    assert {h["x-edxml-document-id"] for _, h in raw} == set(_ids(packages))  # each at least once
    async with AsyncGateway(pipeline.url(SDK), username=SDK, auto_arrived=False) as recipient:
        handed = []
        # every copy is in the inbox already (the backlog was taken above): the time-out
        # only ends the drain of a queue nothing is published to any more
        async for delivery in recipient.receive(topology.inbox(SDK), timeout=3):
            await delivery.ack()
            handed.append(delivery.package.document_id or "")
    assert sorted(handed) == sorted(_ids(packages))  # each exactly once
    rejections = await raw_drain(pipeline, topology.inbox(SENDER))
    assert [h.get("x-rejection-code") for _, h in rejections] == []  # no duplicate of itself


async def _backlog_taken(pipeline: Pipeline) -> bool:
    return await ready_count(pipeline.url(), topology.VALIDATE) == 0 and all(
        [await _at_least(pipeline, code, 500) for code in (RAW, SDK)]
    )


async def _at_least(pipeline: Pipeline, code: str, count: int) -> bool:
    return await ready_count(pipeline.url(), topology.inbox(code)) >= count


def _ids(packages: list[bytes]) -> list[str]:
    return [edxml.parse(p).document_id or "" for p in packages]


async def test_a_poison_message_is_quarantined_while_the_rest_moves_on(pipeline: Pipeline) -> None:
    for code in (SENDER, RAW):
        await pipeline.add_agency(code)
    poison = f"poison-{uuid.uuid4().hex}"
    real_checks = pipeline.validator.checks

    async def crashing_checks(submission: Submission) -> Accepted:
        if submission.message_id == poison:
            raise RuntimeError("this message crashes the validator every time")
        return await real_checks(submission)

    pipeline.validator.checks = crashing_checks  # type: ignore[assignment]
    signer = pipeline.signers["G22"]
    connection = await aio_pika.connect(pipeline.url(SENDER))
    try:
        channel = await connection.channel()
        exchange = await channel.get_exchange(topology.SUBMIT)
        await exchange.publish(
            aio_pika.Message(
                signer.sign(make_document(recipients=[RAW])),
                message_id=poison,
                user_id=SENDER,
                type="edoc",
            ),
            routing_key=SENDER,
        )
    finally:
        await connection.close()
    good = signer.sign(make_document(recipients=[RAW], document_id=f"good-{uuid.uuid4()}"))
    await submit(pipeline, good)
    await wait_for(lambda: _has(pipeline, topology.QUARANTINE), 30)
    quarantined = await raw_drain(pipeline, topology.QUARANTINE)
    assert len(quarantined) == 1
    (headers,) = [h for _, h in quarantined]
    assert "x-death" in headers or "x-first-death-reason" in headers
    await wait_for(lambda: _has(pipeline, topology.inbox(RAW)), 30)  # the rest moved on
    delivered = await raw_drain(pipeline, topology.inbox(RAW))
    assert [body for body, _ in delivered] == [good]


async def _has(pipeline: Pipeline, queue: str) -> bool:
    return await ready_count(pipeline.url(), queue) > 0
