"""The store on real engines: migrations match the models, and the acceptance record holds
under concurrency (tasks and processes)."""

from __future__ import annotations

import asyncio
import multiprocessing
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select, text

from backbone import edxml
from backbone.agency import AgencyCode
from backbone.store import Store, migrate
from backbone.store import repository as repo
from backbone.store.models import Base, Document

from ..conftest import make_document
from ..databases import migrated, postgres_unreachable
from .conftest import unique_code

pytestmark = pytest.mark.integration


async def test_migrations_and_models_agree(store: Store) -> None:
    def diff(connection: object) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})  # type: ignore[arg-type]
        return list(compare_metadata(context, Base.metadata))

    async with store.engine.connect() as connection:
        assert await connection.run_sync(diff) == []


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_migrations_go_down_and_up_again_with_rows(kind: str, tmp_path: Path) -> None:
    """Every downgrade runs on both engines, and a document recorded at head keeps what it
    had when the schema goes back (the dropped state column comes back "accepted")."""
    if kind == "postgresql" and (unreachable := postgres_unreachable()):
        pytest.skip(unreachable)

    async def record_one(url: str) -> None:
        store = Store(url)
        try:
            await _record(store, "000.00.00.G22", "down-and-up", "a" * 64)
        finally:
            await store.close()

    async def states(url: str) -> list[str]:
        store = Store(url)
        try:
            async with store.engine.connect() as connection:
                return list(
                    (await connection.execute(text("SELECT state FROM documents"))).scalars()
                )
        finally:
            await store.close()

    with migrated(kind, tmp_path) as url:
        asyncio.run(record_one(url))
        config = migrate.alembic_config(url)
        command.downgrade(config, "0003")
        assert asyncio.run(states(url)) == ["accepted"]
        command.downgrade(config, "base")
        command.upgrade(config, "head")


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_the_directory_s_existing_agencies_are_numbered_in_the_order_they_changed(
    kind: str, tmp_path: Path
) -> None:
    if kind == "postgresql" and (unreachable := postgres_unreachable()):
        pytest.skip(unreachable)

    async def run(url: str, sql: str) -> list[tuple[object, ...]]:
        store = Store(url)
        try:
            async with store.engine.begin() as connection:
                result = await connection.execute(text(sql))
                return [tuple(row) for row in result] if result.returns_rows else []
        finally:
            await store.close()

    with migrated(kind, tmp_path) as url:
        config = migrate.alembic_config(url)
        command.downgrade(config, "0005")
        for code, level, when in [
            ("000.00.00.H41", 1, "2026-01-02 00:00:00+00"),
            ("000.00.01.H41", 2, "2026-01-01 00:00:00+00"),
            ("000.00.00.G22", 1, "2026-01-03 00:00:00+00"),
        ]:
            asyncio.run(
                run(
                    url,
                    "INSERT INTO agencies (code, name, level, root, active, created_at, updated_at)"
                    f" VALUES ('{code}', 'x', {level}, '{code[-3:]}', true, '{when}', '{when}')",
                )
            )
        command.upgrade(config, "head")
        numbered = asyncio.run(run(url, "SELECT code, version FROM agencies ORDER BY version"))
        counter = asyncio.run(run(url, "SELECT value FROM directory_version"))
    assert numbered == [("000.00.01.H41", 1), ("000.00.00.H41", 2), ("000.00.00.G22", 3)]
    assert counter == [(3,)]  # the next change is 4


async def test_every_change_to_the_directory_takes_the_next_version(store: Store) -> None:
    """(Other tests write to the same database meanwhile: only these two are looked at.)"""
    parent, child = AgencyCode.parse(unique_code()), AgencyCode.parse(unique_code())
    ours = {str(parent), str(child)}

    async def changes(since: int) -> list[tuple[str, int, bool]]:
        async with store.sessions() as session:
            found = await repo.directory_changes(session, since, 100_000)
        return [(a.code, a.version, a.active) for a in found if a.code in ours]

    async with store.transaction() as session:
        base = await repo.last_version(session)
        await repo.upsert_agencies(
            session, [repo.AgencyRow(parent, "Sở A", None), repo.AgencyRow(child, "Phòng B", None)]
        )
    (p, v1, _), (c, v2, _) = await changes(base)
    assert (p, c) == (str(parent), str(child)) and base < v1 < v2
    async with store.transaction() as session:
        await repo.upsert_agencies(session, [repo.AgencyRow(parent, "Sở A", None)])  # unchanged
        await repo.set_agency_active(session, str(child), False)
        await repo.upsert_agencies(session, [repo.AgencyRow(parent, "Sở A mới", None)])
    (c, v3, c_active), (p, v4, p_active) = await changes(v2)
    assert (c, c_active, p, p_active) == (str(child), False, str(parent), True)
    assert v2 < v3 < v4
    assert await changes(v4) == []
    async with store.sessions() as session:
        assert len(await repo.directory_changes(session, base, 1)) == 1


async def test_writers_at_the_same_time_take_numbers_in_the_order_they_commit(
    database_url: str,
) -> None:
    """The first writer holds its transaction open after taking its number; the second
    waits for it instead of taking the same number (or one below a commit already seen)."""
    first, second = Store(database_url), Store(database_url)
    codes = [AgencyCode.parse(unique_code()), AgencyCode.parse(unique_code())]
    committed: list[str] = []

    async def write(store: Store, code: AgencyCode, hold: float) -> None:
        async with store.transaction() as session:
            await repo.upsert_agencies(session, [repo.AgencyRow(code, "Sở", None)])
            await asyncio.sleep(hold)
        committed.append(str(code))

    try:
        holding = asyncio.create_task(write(first, codes[0], 0.5))
        await asyncio.sleep(0.1)  # it has taken its number and holds it
        await write(second, codes[1], 0)
        await holding
        async with first.sessions() as session:
            found = await repo.existing_agencies(session, [str(c) for c in codes])
    finally:
        await first.close()
        await second.close()
    assert committed == [str(codes[0]), str(codes[1])]
    assert found[str(codes[0])].version < found[str(codes[1])].version


async def _record(store: Store, sender: str, document_id: str, sha: str) -> repo.AcceptanceRecord:
    async with store.transaction() as session:
        (record,) = await repo.record_acceptances(
            session, [repo.Submission(sender, document_id, sha, 1)]
        )
        return record


async def test_new_then_redelivery_then_duplicate(store: Store) -> None:
    document_id = f"doc-{uuid.uuid4()}"
    first = await _record(store, "000.00.00.G22", document_id, "a" * 64)
    again = await _record(store, "000.00.00.G22", document_id, "a" * 64)
    other = await _record(store, "000.00.00.G22", document_id, "b" * 64)
    assert [first.outcome, again.outcome, other.outcome] == ["new", "redelivery", "duplicate"]
    assert first.backbone_id == again.backbone_id == other.backbone_id
    # the same DocumentId from another sender is another document
    assert (await _record(store, "000.00.00.H41", document_id, "b" * 64)).outcome == "new"


async def test_a_batch_is_decided_as_if_one_after_the_other(store: Store) -> None:
    document_id = f"doc-{uuid.uuid4()}"
    same, other = "a" * 64, "b" * 64
    batch = [
        repo.Submission("000.00.00.G22", document_id, same, 1),
        repo.Submission("000.00.00.H41", document_id, same, 1),  # another sender's
        repo.Submission("000.00.00.G22", document_id, same, 1),  # redelivered meanwhile
        repo.Submission("000.00.00.G22", document_id, other, 1),  # the DocumentId reused
    ]
    async with store.transaction() as session:
        records = await repo.record_acceptances(session, batch)
    assert [r.outcome for r in records] == ["new", "new", "redelivery", "duplicate"]
    assert records[0].backbone_id == records[2].backbone_id == records[3].backbone_id
    assert records[1].backbone_id != records[0].backbone_id
    async with store.transaction() as session:  # and the next batch sees them
        (later,) = await repo.record_acceptances(session, [batch[1]])
    assert (later.outcome, later.backbone_id) == ("redelivery", records[1].backbone_id)


async def test_document_facts_are_recorded(store: Store) -> None:
    package = make_document(document_id=f"facts-{uuid.uuid4()}", priority=2)
    async with store.transaction() as session:
        (record,) = await repo.record_acceptances(
            session,
            [
                repo.Submission(
                    package.sender or "",
                    package.document_id,
                    "c" * 64,
                    len(edxml.build(package)),
                    repo.document_facts(package),
                )
            ],
        )
    async with store.sessions() as session:
        row = (
            await session.execute(select(Document).where(Document.id == record.backbone_id))
        ).scalar_one()
    assert (row.code_number, row.code_notation, row.priority) == ("7816", "VPCP-TTĐT", 2)
    assert row.promulgation_date is not None and row.promulgation_date.isoformat() == "2026-11-23"
    assert row.bussiness_doc_type == 0


async def _race(
    url: str, sender: str, document_id: str, hashes: list[str]
) -> list[tuple[str, str]]:
    store = Store(url)
    try:
        results = await asyncio.gather(*(_record(store, sender, document_id, h) for h in hashes))
        return [(h, r.outcome.value) for h, r in zip(hashes, results, strict=True)]
    finally:
        await store.close()


def _race_in_process(
    url: str, sender: str, document_id: str, hashes: list[str]
) -> list[tuple[str, str]]:
    return asyncio.run(_race(url, sender, document_id, hashes))


def _check(results: list[tuple[str, str]]) -> None:
    winners = [h for h, outcome in results if outcome == "new"]
    assert len(winners) == 1, results
    for sha, outcome in results:
        if outcome != "new":
            assert outcome == ("redelivery" if sha == winners[0] else "duplicate"), (sha, outcome)


async def test_racing_tasks_get_exactly_one_new(database_url: str) -> None:
    document_id = f"race-{uuid.uuid4()}"
    hashes = ["a" * 64 if i % 3 else "b" * 64 for i in range(40)]
    results = await _race(database_url, "000.00.00.G22", document_id, hashes)
    _check(results)
    assert {o for _, o in results} == {"new", "redelivery", "duplicate"}


def test_racing_processes_get_exactly_one_new(database_url: str) -> None:
    document_id = f"race-{uuid.uuid4()}"
    batches = [["a" * 64] * 10 + ["b" * 64] * 10, ["b" * 64] * 10 + ["a" * 64] * 10]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
        futures = [
            pool.submit(_race_in_process, database_url, "000.00.00.G22", document_id, b)
            for b in batches
        ]
        results = [r for f in futures for r in f.result(timeout=120)]
    assert len(results) == 40
    _check(results)
