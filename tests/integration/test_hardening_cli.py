"""Issue 13, the commands on a real database (SQLite) with no broker: identifiers in ASCII
digits (12), data never read as terminal markup (13), input checks and the CSV import's
errors (25), help and output (27)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from backbone.agency import AgencyCode, PatternError, validate_pattern
from backbone.config import get_settings
from backbone.store import Store
from backbone.store.models import Delivery, Document, EventRecord

from ..databases import migrated, postgres_unreachable
from .test_cli_registry import invoke

pytestmark = pytest.mark.integration
MARKUP = "[/x] [link=https://evil.example]bấm[/link] [bold red] :warning:"


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A migrated SQLite database, and a broker that refuses at once (port 1)."""
    with migrated("sqlite", tmp_path) as url:
        monkeypatch.setenv("BACKBONE_DATABASE_URL", url)
        monkeypatch.setenv("BACKBONE_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/")
        monkeypatch.setenv("BACKBONE_MGMT_URL", "http://guest:guest@127.0.0.1:1/")
        get_settings.cache_clear()
        yield url
        get_settings.cache_clear()


def one_error(stderr: str) -> str:
    (line,) = [each for each in stderr.splitlines() if each.startswith("error: ")]
    assert "Traceback" not in stderr
    return line


# --- 12: ASCII digits only -------------------------------------------------------------------


def test_full_width_digits_are_no_identifier_anywhere(database: str) -> None:
    wide = "０００.００.００.H４１"
    assert not AgencyCode.is_valid(wide)
    with pytest.raises(PatternError):
        validate_pattern("*.*.*.H４１")
    code, _, stderr = invoke("agency", "add", wide, "--name", "x", "--no-principal")
    assert code == 1 and wide in one_error(stderr)
    code, _, stderr = invoke("report", "--under", wide)
    assert code == 1 and one_error(stderr)


# --- 13: data is text, never markup ------------------------------------------------------------


def test_agency_list_and_status_print_markup_in_data_literally(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "300")  # every value on one line
    code, _, stderr = invoke("agency", "add", "000.00.00.H41", "--name", MARKUP, "--no-principal")
    assert code == 0, stderr
    code, stdout, stderr = invoke("agency", "list")
    assert code == 0, stderr
    assert "[/x]" in stdout and "[link=https://evil.example]" in stdout
    assert ":warning:" in stdout

    document_id = f"000.00.00.G22,2026/11/23,1/{MARKUP}"

    async def fill() -> None:
        store = Store(database)
        async with store.transaction() as session:
            now = datetime.now(UTC)
            document = Document(
                id=str(uuid.uuid4()),
                sender="000.00.00.G22",
                document_id=document_id,
                priority=0,
                accepted_at=now,
                submitted_at=now,
                content_sha256="0" * 64,
                size=1,
            )
            session.add(document)
            await session.flush()
            session.add(
                Delivery(
                    document_pk=document.id,
                    recipient="000.00.00.H41",
                    transport_state="routed",
                    routed_at=now,
                )
            )
            session.add(
                EventRecord(
                    event_id=uuid.uuid4().hex,
                    document_pk=document.id,
                    edxml_document_id=document_id,
                    recipient="000.00.00.H41",
                    kind="status",
                    status_code="02",
                    description=MARKUP,
                    recorded_at=now,
                )
            )
        await store.close()

    asyncio.run(fill())
    code, stdout, stderr = invoke("status", document_id)
    assert code == 0, stderr
    assert stdout.count("[/x]") == 2  # the DocumentId and the Description, as written
    assert stdout.count(":warning:") == 2 and "⚠" not in stdout


# --- 25: input checks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"code,name,parent\n000.00.00.H41,T\xe9st,\n", "agencies.csv:2: not UTF-8"),
        (b"code;name;parent\n000.00.00.H41;A;\n", "separated by ';'"),
        (b"code,name,parent,extra\n", "unexpected 'extra'"),
        (b'code,name,parent\n000.00.00.H41,"A, unterminated\n', "is not closed"),
        (b"code,name\n000.00.00.H41,A\n", "no parent"),
    ],
)
def test_a_csv_that_cannot_be_read_names_the_file_and_line(
    database: str, tmp_path: Path, content: bytes, says: str
) -> None:
    csv = tmp_path / "agencies.csv"
    csv.write_bytes(content)
    code, _, stderr = invoke("agency", "import", csv)
    assert code == 1 and says in one_error(stderr)


def test_csv_rows_with_other_column_counts_are_refused_by_line(
    database: str, tmp_path: Path
) -> None:
    csv = tmp_path / "agencies.csv"
    csv.write_text(
        "code,name,parent\n000.00.00.H41,Nghệ An,\n000.00.00.H14,Sở, Tư pháp,\n",
        encoding="utf-8",
    )
    code, stdout, stderr = invoke("agency", "import", csv)
    assert code == 1 and "1 added" in stdout
    assert f"{csv}:3: refused: 4 columns, expected 3" in stderr
    assert "needs the name in double quotes" in stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--name", "   "), "the name is empty"),
        (("--name", "x" * 501), "at most 500"),
        (("--name", "a\x1b[31mb"), "control character"),
        (("--name", "x", "--password", ""), "the password is empty"),
        (("--name", "x", "--password", "a\nb"), "control character"),
    ],
)
def test_agency_add_checks_its_input_before_writing(
    database: str, args: tuple[str, ...], says: str
) -> None:
    code, _, stderr = invoke("agency", "add", "000.00.00.H42", *args)
    assert code == 1 and says in one_error(stderr)
    _, stdout, _ = invoke("agency", "list", "--all", "--json")
    assert stdout == ""  # nothing written


def test_an_empty_password_file_is_refused(database: str, tmp_path: Path) -> None:
    empty = tmp_path / "empty.password"
    empty.write_text("\n")
    code, _, stderr = invoke(
        "agency", "add", "000.00.00.H42", "--name", "x", "--password-file", empty
    )
    assert code == 1 and "is empty" in one_error(stderr)


# --- 27: help and output ------------------------------------------------------------------------


def test_help_is_plain_text_with_its_defaults_and_h_works() -> None:
    code, stdout, _ = invoke("send", "-h")
    assert code == 0 and "Broker user [the sending agency" in stdout
    code, stdout, _ = invoke("-h")
    assert code == 0 and "Commands:" in stdout
    code, stdout, _ = invoke("demo", "--help")
    assert code == 0 and "joins later" not in stdout
    # a docstring's hard line breaks are rewrapped: no sentence is cut after a few words
    code, stdout, _ = invoke("init", "--help")
    summary = stdout.split("Options:")[0]
    assert "Set up the database (every migration) and the broker:" in " ".join(summary.split())


# --- 18: a password never shown -----------------------------------------------------------------


def test_init_shows_the_database_without_its_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    unreachable = postgres_unreachable()
    if unreachable:
        pytest.skip(unreachable)  # PostgreSQL's trust auth takes any password: it must be hidden
    with migrated("postgresql", tmp_path) as url:
        with_password = make_url(url).set(password="s3cret-pw").render_as_string(False)
        monkeypatch.setenv("BACKBONE_DATABASE_URL", with_password)
        get_settings.cache_clear()
        code, stdout, stderr = invoke("init", "--no-broker")
        get_settings.cache_clear()
    assert code == 0, stderr
    assert "database ready: " in stdout and ":***@" in stdout
    assert "s3cret-pw" not in stdout + stderr


# --- 22: every outcome found by the id send printed ---------------------------------------------


def test_status_finds_a_rejected_document_by_the_id_send_printed(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "300")
    document_id = "000.00.00.G22,2026/11/23,0701302272984"

    async def fill() -> None:
        store = Store(database)
        async with store.transaction() as session:
            session.add(
                EventRecord(
                    event_id=uuid.uuid4().hex,
                    sender="000.00.00.G22",
                    edxml_document_id=document_id,
                    kind="rejected",
                    reason_code="digest-mismatch",
                    description="the package was changed after signing",
                    recorded_at=datetime.now(UTC),
                )
            )
        await store.close()

    asyncio.run(fill())
    code, stdout, stderr = invoke("status", document_id)
    assert code == 0, stderr
    assert "rejected" in stdout and "digest-mismatch" in stdout and "+07:00" in stdout
    code, stdout, _ = invoke("status", document_id, "--json")
    assert code == 0 and '"reason": "digest-mismatch"' in stdout
