"""send, receive and run as a user runs them, against a real broker (issue 13, points 14, 15,
18, 22, 24, 25, 27): safe and unique file names, stored before 01, passwords off the command
line, unique default DocumentIds, one-line failures and local input checks."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import pytest
from typer.testing import CliRunner

from backbone import edxml, signing
from backbone.broker import topology
from backbone.cli import app
from backbone.cli.pipeline import file_name
from backbone.client import AsyncGateway, Delivery
from backbone.config import get_settings

from ..conftest import SENDER, Signer
from ..worlds import document
from .conftest import PASSWORD, Pipeline
from .helpers import ready_count, wait_for

pytestmark = pytest.mark.pipeline
H41 = "000.00.00.H41"
Invoke = Callable[..., Awaitable[tuple[int, str, str]]]
runner = CliRunner()


@pytest.fixture
def cli(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> Iterator[Invoke]:
    """`backbone ...` on the test's virtual host, run in a thread (the commands run event
    loops of their own) while the workers go on."""
    monkeypatch.setenv("BACKBONE_AMQP_URL", pipeline.settings.amqp_url)
    monkeypatch.setenv("BACKBONE_MGMT_URL", pipeline.broker.mgmt.url)
    monkeypatch.setenv("BACKBONE_DATABASE_URL", pipeline.settings.database_url)
    monkeypatch.delenv("BACKBONE_PASSWORD", raising=False)
    get_settings.cache_clear()

    async def invoke(*args: str | Path, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        def run() -> tuple[int, str, str]:
            result = runner.invoke(app, [str(a) for a in args], env=env)
            return result.exit_code, result.stdout, without_worker_logs(result.stderr)

        get_settings.cache_clear()
        return await asyncio.to_thread(run)

    yield invoke
    get_settings.cache_clear()


WORKER_LOG = re.compile(r"^\d{4}-\d\d-\d\dT\S+Z \[\w+\s*\] ")


def without_worker_logs(stderr: str) -> str:
    """The command's own stderr: the workers of this process log into the same stream."""
    return "".join(line for line in stderr.splitlines(True) if not WORKER_LOG.match(line))


def one_error_line(status: int, stdout: str, stderr: str) -> str:
    """The one ``error:`` line of a failed command (nothing else on stderr)."""
    assert status != 0, stdout
    assert "Traceback" not in stdout + stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "unexpected" not in lines[0], lines[0]
    return lines[0]


def signer_options(pipeline: Pipeline, name: str = "G22") -> list[str | Path]:
    signer = pipeline.signers[name]
    return ["--key", signer.key_path, "--cert", signer.cert_path]


def bare_url(pipeline: Pipeline) -> str:
    """The test's virtual host with no user and no password in the URL."""
    parts = urlsplit(pipeline.url())
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


async def send_signed(pipeline: Pipeline, *packages: bytes) -> None:
    async with AsyncGateway(pipeline.url(SENDER), username=SENDER) as sender:
        for body in packages:
            await sender.send(body)


async def waiting(pipeline: Pipeline, queue: str, at_least: int) -> None:
    async def enough() -> bool:
        return await ready_count(pipeline.url(), queue) >= at_least

    await wait_for(enough, 30)


async def stop_validator(pipeline: Pipeline) -> None:
    """From here on, what receive publishes (its 01s) stays in the validation queue, where
    the test can count it exactly (publisher confirms: once receive returns, it is there)."""
    await pipeline.stop("validator")


async def submitted(pipeline: Pipeline) -> list[edxml.Package]:
    """What waits in the validation queue, taken off it."""
    connection = await aio_pika.connect(pipeline.url())
    try:
        channel = await connection.channel()
        queue = await channel.get_queue(topology.VALIDATE, ensure=False)
        packages = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            packages.append(edxml.parse(message.body))
        return packages
    finally:
        await connection.close()


async def reject_with_message_id(pipeline: Pipeline, message_id: str) -> None:
    """A submission the validator refuses, with a message id a hostile agency chose: the
    rejection names it in x-rejected-message-id."""
    connection = await aio_pika.connect(pipeline.url(SENDER))
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(topology.SUBMIT, ensure=False)
        message = aio_pika.Message(b"not edXML", message_id=message_id, user_id=SENDER)
        await exchange.publish(message, routing_key=SENDER)
    finally:
        await connection.close()


# --- 14, 27: file names, statuses and their codes ----------------------------------------------


async def test_receive_out_names_no_header_can_steer_and_keeps_every_status(
    pipeline: Pipeline, cli: Invoke, tmp_path: Path
) -> None:
    for code in (SENDER, H41):
        await pipeline.add_agency(code)
    package = document(recipients=[H41])
    await send_signed(pipeline, pipeline.signers["G22"].sign(package))
    async with AsyncGateway(pipeline.url(H41), username=H41) as recipient:  # 01 on receipt
        async for delivery in recipient.receive(topology.inbox(H41), timeout=10, count=1):
            await delivery.ack()
            for code in ("03", "04"):
                await recipient.send_status(delivery, code, f"status {code}")
    absolute = f"/tmp/escaped-{uuid.uuid4().hex}"
    for message_id in ("../../escaped", absolute):
        await reject_with_message_id(pipeline, message_id)
    await waiting(pipeline, topology.inbox(SENDER), 5)

    out = tmp_path / "a" / "b" / "received"
    status, stdout, stderr = await cli(
        "receive", "--as", SENDER, "--out", out, "--count", "5", "--url", pipeline.url(SENDER)
    )
    assert status == 0, stderr
    saved = sorted(p.name for p in out.iterdir())
    assert len(saved) == 5, saved  # three statuses about one document: three files
    assert [n.split("-")[0] for n in saved].count("rejection") == 2
    assert {n[:9] for n in saved if n.startswith("status-")} == {
        "status-01",
        "status-03",
        "status-04",
    }
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", n) and not n.startswith(".") for n in saved)
    assert {p.parent for p in tmp_path.rglob("*.edxml")} == {out}  # nothing escaped
    assert not Path(f"{absolute}.edxml").exists()
    for code, meaning in (("01", "arrived"), ("03", "accepted"), ("04", "assigned")):
        assert f"status {code} ({meaning}) about {package.document_id} from {H41}" in stdout
    assert stdout.count("REJECTED at") == 2
    assert stderr.strip() == f"5 statuses received from {topology.inbox(SENDER)}"


async def test_a_delivery_that_cannot_be_saved_gets_no_01_stays_queued_and_blocks_nothing(
    pipeline: Pipeline, cli: Invoke, tmp_path: Path
) -> None:
    for code in (SENDER, H41):
        await pipeline.add_agency(code)
    first, second = (
        pipeline.signers["G22"].sign(document(recipients=[H41], subject=s))
        for s in ("first", "second")
    )
    await send_signed(pipeline, first, second)
    await waiting(pipeline, topology.inbox(H41), 2)
    await stop_validator(pipeline)
    out = tmp_path / "received"
    blocked = Delivery(first, edxml.parse(first), {}, H41, False, lambda *_: None)
    (out / file_name(blocked)).mkdir(parents=True)  # the first cannot take its name

    status, stdout, stderr = await cli(
        "receive", "--as", H41, "--out", out, "--timeout", "1", "--url", pipeline.url(H41)
    )
    assert status == 1 and "Traceback" not in stdout + stderr
    warning, summary, error = stderr.splitlines()
    first_id = edxml.parse(first).document_id
    assert warning.startswith(f"warning: edoc {first_id} from {SENDER}") and "not saved" in warning
    assert summary == f"1 document received from {topology.inbox(H41)}"
    assert error == f"error: 1 delivery not saved in {out}, left in {topology.inbox(H41)}"
    second_id = edxml.parse(second).document_id
    (line,) = stdout.splitlines()
    assert line.startswith(f"edoc {second_id} from {SENDER}") and "saved as edoc-" in line
    saved = [p for p in out.iterdir() if p.is_file()]
    assert [p.read_bytes() for p in saved] == [second]
    statuses = await submitted(pipeline)
    assert [(s.document_id, s.header.status_code) for s in statuses] == [(second_id, "01")]  # type: ignore[union-attr]
    await waiting(pipeline, topology.inbox(H41), 1)  # the first handed back


# --- 15: stored before 01 ---------------------------------------------------------------------


@contextmanager
def read_only(directory: Path) -> Iterator[None]:
    """A directory nobody may write in: a read-only bind mount for root (whom permissions
    do not stop), permissions for anyone else."""
    directory.mkdir(parents=True)
    if os.geteuid() != 0:
        directory.chmod(0o555)
        try:
            yield
        finally:
            directory.chmod(0o755)
        return
    mounted = subprocess.run(
        ["mount", "--bind", "-o", "ro", directory, directory], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot make a read-only directory: {mounted.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", directory], check=True)


async def test_receive_into_a_read_only_directory_sends_no_01(
    pipeline: Pipeline, cli: Invoke, tmp_path: Path
) -> None:
    for code in (SENDER, H41):
        await pipeline.add_agency(code)
    await send_signed(pipeline, pipeline.signers["G22"].sign(document(recipients=[H41])))
    await waiting(pipeline, topology.inbox(H41), 1)
    await stop_validator(pipeline)
    out = tmp_path / "read-only"
    with read_only(out):
        result = await cli("receive", "--as", H41, "--out", out, "--url", pipeline.url(H41))
    line = one_error_line(*result)
    assert line.startswith(f"error: {out}: cannot save into this directory")
    assert await submitted(pipeline) == []  # no 01
    assert await ready_count(pipeline.url(), topology.inbox(H41)) == 1


# --- 18: passwords off the command line, never shown ----------------------------------------


async def test_passwords_from_a_file_or_the_environment_and_never_shown(
    pipeline: Pipeline, cli: Invoke, tmp_path: Path
) -> None:
    for code in (SENDER, H41):
        await pipeline.add_agency(code)
    password_file = tmp_path / "password"
    password_file.write_text(f"{PASSWORD}\nnot this line\n")
    sign = signer_options(pipeline)
    base = ["send", "--as", SENDER, "--to", H41, "--subject", "V/v mật khẩu", *sign]

    status, by_file, stderr = await cli(
        *base, "--url", bare_url(pipeline), "--password-file", password_file
    )
    assert status == 0, stderr
    status, by_environment, stderr = await cli(
        *base, "--url", bare_url(pipeline), env={"BACKBONE_PASSWORD": PASSWORD}
    )
    assert status == 0, stderr
    await waiting(pipeline, topology.inbox(H41), 2)

    status, stdout, stderr = await cli(
        "receive", "--as", H41, "--count", "2", "--url", bare_url(pipeline),
        "--password-file", password_file,
    )  # fmt: skip
    assert status == 0, stderr
    assert by_file.strip() in stdout and by_environment.strip() in stdout

    wrong = "wrong-pass-6d1c"
    parts = urlsplit(pipeline.url(SENDER))
    netloc = f"{SENDER}:{wrong}@{parts.netloc.rpartition('@')[2]}"
    result = await cli(*base, "--url", urlunsplit((parts.scheme, netloc, parts.path, "", "")))
    line = one_error_line(*result)
    assert wrong not in result[1] + result[2]
    assert f"refused the login of {SENDER}" in line and f"{SENDER}:***@" in line


# --- 22: a default DocumentId that is new; send --out ------------------------------------------


async def test_two_sends_without_a_number_are_two_documents(
    pipeline: Pipeline, cli: Invoke
) -> None:
    for code in (SENDER, H41):
        await pipeline.add_agency(code)
    args = ["send", "--as", SENDER, "--to", H41, "--subject", "V/v hai lần",
            *signer_options(pipeline), "--url", pipeline.url(SENDER)]  # fmt: skip
    ids = []
    for _ in range(2):
        status, stdout, stderr = await cli(*args)
        assert status == 0, stderr
        ids.append(stdout.strip())
    assert ids[0] != ids[1]
    async with AsyncGateway(pipeline.url(H41), username=H41) as recipient:
        received = []
        async for delivery in recipient.receive(topology.inbox(H41), timeout=15, count=2):
            received.append(str(delivery.package.document_id))
            await delivery.ack()
    assert sorted(received) == sorted(ids)  # neither refused as a duplicate


async def test_send_out_writes_the_signed_package_and_needs_no_broker(
    pipeline: Pipeline, cli: Invoke, tmp_path: Path
) -> None:
    attachment = tmp_path / "letter.txt"
    attachment.write_bytes(b"Kinh gui")
    unsigned, signed = tmp_path / "unsigned.edxml", tmp_path / "signed.edxml"
    nowhere = "amqp://127.0.0.1:1/"  # would fail if it were used
    base = ["send", "--as", SENDER, "--to", H41, "--subject", "Mẫu", "--attach", attachment]
    status, stdout, stderr = await cli(*base, "--out", unsigned, "--url", nowhere)
    assert status == 0, stderr
    package = edxml.load(unsigned.read_bytes())
    assert package.document_id == stdout.strip()
    assert b"xmldsig" not in unsigned.read_bytes()

    status, stdout, stderr = await cli(*base, *signer_options(pipeline), "--out", signed)
    assert status == 0, stderr
    verified = pipeline.validator.checks.verifier.verify(signed.read_bytes())
    assert verified.package.document_id == stdout.strip()
    assert verified.fingerprint == pipeline.signers["G22"].fingerprint


# --- 24: one line, never a hang ---------------------------------------------------------------


async def test_receive_from_an_inbox_the_user_may_not_read(pipeline: Pipeline, cli: Invoke) -> None:
    for code in (SENDER, H41):
        await pipeline.add_agency(code)
    result = await cli("receive", "--as", H41, "--user", SENDER, "--url", pipeline.url(SENDER))
    line = one_error_line(*result)
    assert line == f"error: the broker refused {SENDER} access to {topology.inbox(H41)}"


async def test_send_to_a_virtual_host_that_does_not_exist(pipeline: Pipeline, cli: Invoke) -> None:
    await pipeline.add_agency(SENDER)
    parts = urlsplit(pipeline.url(SENDER))
    url = urlunsplit((parts.scheme, parts.netloc, "/no-such-vhost", "", ""))
    result = await cli("send", "--as", SENDER, "--to", H41, "--subject", "x",
                       *signer_options(pipeline), "--url", url)  # fmt: skip
    line = one_error_line(*result)
    assert "has no virtual host 'no-such-vhost', or 000.00.00.G22 may not use it" in line
    assert PASSWORD not in line


def test_send_to_not_a_url_is_one_line_and_no_hang(signers: dict[str, Signer]) -> None:
    signer = signers["G22"]
    result = subprocess.run(
        [sys.executable, "-m", "backbone", "send", "--as", SENDER, "--to", H41, "--subject", "x",
         "--key", str(signer.key_path), "--cert", str(signer.cert_path),
         "--url", "not a url"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    line = one_error_line(result.returncode, result.stdout, result.stderr)
    assert line == "error: --url is not an amqp:// or amqps:// URL with a host"


def test_run_all_with_the_broker_unreachable(
    monkeypatch: pytest.MonkeyPatch, pki: signing.Pki
) -> None:
    monkeypatch.setenv("BACKBONE_AMQP_URL", "amqp://backbone:hidden-9f2@127.0.0.1:1/")
    monkeypatch.setenv("BACKBONE_TRUST_BUNDLE", str(pki.ca_bundle))
    get_settings.cache_clear()
    try:
        result = runner.invoke(app, ["run", "all"])
    finally:
        get_settings.cache_clear()
    line = one_error_line(result.exit_code, result.stdout, result.stderr)
    assert line.startswith("error: cannot reach the broker amqp://backbone:***@127.0.0.1:1/")


async def test_run_all_says_when_the_database_does_not_answer(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    settings = pipeline.settings
    env = dict(os.environ)
    env.update(
        {
            "BACKBONE_AMQP_URL": settings.amqp_url,
            "BACKBONE_MGMT_URL": settings.mgmt_url,
            "BACKBONE_DATABASE_URL": f"sqlite:///{tmp_path}/no/such/folder/backbone.db",
            "BACKBONE_TRUST_BUNDLE": str(settings.trust_bundle),
            "BACKBONE_CRL_FILES": json.dumps([str(p) for p in settings.crl_files]),
            "BACKBONE_BACKBONE_KEY": str(settings.backbone_key),
            "BACKBONE_BACKBONE_CERT": str(settings.backbone_cert),
        }
    )
    workers = subprocess.Popen(
        [sys.executable, "-m", "backbone", "run", "all"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert workers.stderr is not None
        first = await asyncio.wait_for(asyncio.to_thread(workers.stderr.readline), 60)
    finally:
        workers.send_signal(signal.SIGTERM)
        _, rest = workers.communicate(timeout=60)
    assert first.startswith("warning: the database sqlite:///"), first
    assert "does not answer" in first and "the workers start and wait for it" in first
    assert "Traceback" not in rest


async def test_receive_out_a_file_is_refused_before_connecting(
    pipeline: Pipeline, cli: Invoke, tmp_path: Path
) -> None:
    await pipeline.add_agency(H41)
    a_file = tmp_path / "file"
    a_file.write_text("")
    result = await cli("receive", "--as", H41, "--out", a_file, "--url", "amqp://127.0.0.1:1/")
    assert one_error_line(*result) == f"error: {a_file}: is a file, --out takes a directory"


# --- 25: input checks before connecting -------------------------------------------------------

SEND = ["send", "--as", SENDER, "--subject", "x"]


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["receive", "--as", H41, "--count", "0"], {}, "Invalid value for '--count'"),
        (["receive", "--as", H41, "--count", "-1"], {}, "Invalid value for '--count'"),
        (["receive", "--as", H41, "--timeout", "-1"], {}, "--timeout: give a number of seconds"),
        (["receive", "--as", "000.00.00.h41"], {}, "--as: '000.00.00.h41' is not an agency"),
        (
            [
                "send",
                "--as",
                SENDER,
                "--to",
                f"{H41},0OO.00.00.H14",
                "--subject",
                "x",
                "--unsigned",
            ],
            {},
            "--to: '0OO.00.00.H14' is not an agency identifier",
        ),
        (
            [
                "send",
                "--as",
                SENDER,
                "--to",
                f"{H41},000.00.00.H14",
                "--subject",
                "x",
                "--unsigned",
            ],
            {"BACKBONE_MAX_RECIPIENTS": "1"},
            "--to names 2 recipients, over the limit of 1 (BACKBONE_MAX_RECIPIENTS)",
        ),
        (
            [
                "send",
                "--as",
                SENDER,
                "--to",
                H41,
                "--subject",
                "x",
                "--unsigned",
                "--attach",
                "{big}",
            ],
            {"BACKBONE_MAX_ATTACHMENT_BYTES": "10"},
            "big.bin: 11 bytes, over the attachment limit of 10 (BACKBONE_MAX_ATTACHMENT_BYTES)",
        ),
        (
            [*SEND, "--to", H41],
            {},
            "the document would go unsigned and be refused: sign it with --key KEY --cert CERT",
        ),
        (["send", "{unsigned}"], {}, "is not signed and would be refused: sign it with --key"),
    ],
)
def test_bad_input_is_refused_before_connecting(
    args: list[str], env: dict[str, str], expected: str, tmp_path: Path
) -> None:
    big, unsigned = tmp_path / "big.bin", tmp_path / "unsigned.edxml"
    big.write_bytes(b"x" * 11)
    unsigned.write_bytes(edxml.build(document(recipients=[H41])))
    args = [a.format(big=big, unsigned=unsigned) for a in args]
    # a broker that is not there: a command that connected would fail otherwise
    env = {"BACKBONE_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/", "BACKBONE_PASSWORD": "x", **env}
    get_settings.cache_clear()
    try:
        result = runner.invoke(app, args, env=env)
    finally:
        get_settings.cache_clear()
    line = one_error_line(result.exit_code, result.stdout, result.stderr)
    assert expected in line


# --- 27: receive for a gateway: which agency, plurals, times with their zone -----------------


async def test_receive_for_a_gateway_names_the_agency_of_each_copy_and_the_time_zone(
    pipeline: Pipeline, cli: Invoke, tmp_path: Path
) -> None:
    served = ("000.00.15.H41", "000.00.16.H41")
    await pipeline.add_agency(SENDER)
    for code in served:
        await pipeline.add_agency(code, inbox=False)
    await pipeline.add_gateway("lgsp-h41", ["*.*.*.H41"])
    package = document(recipients=list(served))
    await send_signed(pipeline, pipeline.signers["G22"].sign(package))
    await waiting(pipeline, topology.gateway_queue("lgsp-h41"), 2)

    out = tmp_path / "gateway"
    status, stdout, stderr = await cli(
        "receive", "--gateway", "lgsp-h41", "--count", "2", "--out", out,
        "--url", pipeline.url("lgsp-h41"),
    )  # fmt: skip
    assert status == 0, stderr
    lines = sorted(stdout.splitlines())
    for line, code in zip(lines, served, strict=True):
        assert line.startswith(f"edoc {package.document_id} from {SENDER} for {code} at "), line
        assert re.search(r" at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\+07:00 saved as edoc-", line), line
    assert stderr.strip() == "2 documents received from gateway.lgsp-h41"
    assert len(list(out.iterdir())) == 2  # one file per agency's copy
