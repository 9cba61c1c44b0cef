"""The registry on real engines: scopes, deactivation with a TTL cache, certificate rotation,
and CSV import (20,000 agencies, idempotent, refusals with line numbers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backbone.benchmark.parts.agencies import hierarchy, write_csv
from backbone.registry import Registry, RegistryError
from backbone.store import Store

from ..conftest import Signer

pytestmark = pytest.mark.integration

_roots = (f"{letter}{number:02d}" for letter in "QRSTUVWXYZ" for number in range(1, 100))


@pytest.fixture
def root() -> str:
    """A level-1 part no other test of the session uses (the database is shared)."""
    return next(_roots)


async def test_gateway_pattern_scope(registry: Registry, root: str) -> None:
    other = next(_roots)
    await registry.add_agency(f"000.00.00.{root}", "Province")
    await registry.add_agency(f"000.00.15.{root}", "Department", parent=f"000.00.00.{root}")
    await registry.add_agency(f"000.00.15.{other}", "Elsewhere")
    await registry.add_gateway(f"lgsp-{root}", [f"*.*.*.{root}"])
    assert await registry.may_act_for(f"lgsp-{root}", f"000.00.15.{root}")
    assert not await registry.may_act_for(f"lgsp-{root}", f"000.00.15.{other}")
    # an agency principal acts for itself only
    assert await registry.may_act_for(f"000.00.15.{root}", f"000.00.15.{root}")
    assert not await registry.may_act_for(f"000.00.15.{root}", f"000.00.00.{root}")
    assert not await registry.may_act_for("nobody", f"000.00.15.{root}")
    # in scope but not registered: nobody may act for it
    assert not await registry.may_act_for(f"lgsp-{root}", f"001.00.15.{root}")


async def test_deactivation_takes_effect_after_the_ttl(store: Store, root: str) -> None:
    code = f"000.00.00.{root}"
    now = [0.0]
    writer = Registry(store, ttl=5.0, clock=lambda: now[0])
    worker = Registry(store, ttl=5.0, clock=lambda: now[0])
    await writer.add_agency(code, "Province")
    assert await worker.is_active(code) and await worker.may_act_for(code, code)
    await writer.deactivate_agency(code)
    assert not await writer.is_active(code)  # at once where the change was made
    assert await worker.is_active(code)  # still cached elsewhere...
    now[0] += 5.1
    assert not await worker.is_active(code)  # ...for no longer than the TTL
    assert not await worker.may_act_for(code, code)
    (row,) = [a for a in await writer.list_agencies(include_inactive=True) if a.code == code]
    assert not row.active  # history stays
    await writer.add_agency(code, "Province again")
    assert await writer.is_active(code)


async def test_certificate_rotation_and_expiry(
    registry: Registry, signers: dict[str, Signer], root: str
) -> None:
    code = "000.00.00.G22"
    if await registry.get_agency(code) is None:
        await registry.add_agency(code, "Văn phòng Chính phủ")
    for name in ("G22", "G22-rotated", "expired"):
        await registry.register_certificate(code, signers[name].certificates[0])
    await registry.register_certificate(code, signers["G22"].certificates[0])  # idempotent
    assert await registry.is_bound(signers["G22"].fingerprint, code)
    assert await registry.is_bound(signers["G22-rotated"].fingerprint, code)
    assert not await registry.is_bound(signers["expired"].fingerprint, code)
    assert not await registry.is_bound(signers["G22"].fingerprint, f"000.00.00.{root}")
    assert not await registry.is_bound(signers["H41"].fingerprint, code)  # never registered
    a_year_on = datetime.now(UTC) + timedelta(days=400)
    assert not await registry.is_bound(signers["G22"].fingerprint, code, at=a_year_on)
    await registry.add_agency(f"000.00.00.{root}", "Other")
    with pytest.raises(RegistryError, match=r"already registered for 000\.00\.00\.G22"):
        await registry.register_certificate(f"000.00.00.{root}", signers["G22"].certificates[0])


async def test_bad_input_is_refused_clearly(registry: Registry, root: str) -> None:
    with pytest.raises(RegistryError, match="not an agency identifier"):
        await registry.add_agency("vxp.saas.03", "x")
    with pytest.raises(RegistryError, match="is not above it"):
        await registry.add_agency(f"000.00.15.{root}", "x", parent="000.00.00.H14")
    with pytest.raises(RegistryError, match="is not registered"):
        await registry.add_agency(f"000.00.15.{root}", "x", parent=f"000.00.00.{root}")
    with pytest.raises(RegistryError, match="is not registered"):
        await registry.deactivate_agency(f"000.00.00.{root}")
    with pytest.raises(RegistryError, match="not an agency pattern"):
        await registry.add_gateway(f"gw-{root}", ["*.H41"])
    first = await registry.add_gateway(f"gw-{root}", [f"*.*.*.{root}"])
    again = await registry.add_gateway(f"gw-{root}", [f"*.*.*.{root}"])  # idempotent
    assert again.id == first.id
    with pytest.raises(RegistryError, match=rf"already serves \*\.\*\.\*\.{root}; remove it"):
        await registry.add_gateway(f"gw-{root}", [f"*.*.15.{root}"])
    await registry.remove_gateway(f"gw-{root}")
    assert not await registry.may_act_for(f"gw-{root}", f"000.00.00.{root}")
    with pytest.raises(RegistryError, match="not a registered gateway"):
        await registry.remove_gateway(f"gw-none-{root}")
    await registry.add_agency(f"000.00.00.{root}", "x")
    with pytest.raises(RegistryError, match="is an agency identifier"):
        await registry.add_gateway(f"000.00.00.{root}", [f"*.*.*.{root}"])


async def test_removing_an_agency_deactivates_its_principal(registry: Registry, root: str) -> None:
    code = f"000.00.00.{root}"
    await registry.add_agency(code, "x")
    assert await registry.may_act_for(code, code)
    await registry.deactivate_agency(code)
    principal = await registry.get_principal(code)
    assert principal is not None and not principal.active
    await registry.add_agency(code, "x")  # added again: acts again
    assert await registry.may_act_for(code, code)
    await registry.record_access(code, "revoked", "a detail", actor="tester")
    (change,) = await registry.access_history(code)
    assert (change.action, change.detail, change.actor) == ("revoked", "a detail", "tester")


async def test_import_twenty_thousand_agencies(
    registry: Registry, csv_file: Path, root: str
) -> None:
    rows = hierarchy(root)
    assert len(rows) == 20051
    write_csv(csv_file, list(reversed(rows)))  # children before parents: order must not matter
    seen: list[tuple[int, int]] = []
    report = await registry.import_csv(csv_file, lambda done, total: seen.append((done, total)))
    assert (report.added, report.updated, report.unchanged, report.refused) == (20051, 0, 0, [])
    assert seen[-1] == (20051, 20051) and len(seen) > 1
    under = await registry.list_agencies(under=f"000.00.07.{root}")
    assert len(under) == 20 + 20 * 19
    assert len(await registry.list_agencies(under=f"000.03.07.{root}")) == 19
    assert len(await registry.list_agencies(level=2, under=f"000.00.00.{root}")) == 50
    again = await registry.import_csv(csv_file)
    assert (again.added, again.updated, again.unchanged) == (0, 0, 20051)


async def test_import_reports_refused_lines(registry: Registry, csv_file: Path, root: str) -> None:
    province = f"000.00.00.{root}"
    await registry.add_agency(province, "Old name")
    write_csv(
        csv_file,
        [
            (province, "New name", ""),  # line 2: updated
            (f"000.00.01.{root}", "Sở 1", province),  # line 3: added
            ("28.22.H17", "Bad", ""),  # line 4: bad identifier
            (f"000.00.02.{root}", "", province),  # line 5: no name
            (f"000.00.01.{root}", "Twice", province),  # line 6: duplicate in file
            (f"000.03.09.{root}", "Orphan", f"000.00.09.{root}"),  # line 7: parent unknown
            (f"001.03.09.{root}", "Grandchild", f"000.03.09.{root}"),  # line 8: parent refused
            (f"000.00.03.{root}", "Wrong parent", "000.00.00.H14"),  # line 9: not above
        ],
    )
    report = await registry.import_csv(csv_file)
    assert (report.added, report.updated, report.unchanged) == (1, 1, 0)
    reasons = dict(report.refused)
    assert sorted(reasons) == [4, 5, 6, 7, 8, 9]
    assert "not an agency identifier" in reasons[4]
    assert "name is empty" in reasons[5]
    assert "already appears on line 3" in reasons[6]
    assert "neither registered nor in the file" in reasons[7]
    assert "was refused" in reasons[8]
    assert "is not above it" in reasons[9]
    assert (await registry.get_agency(province)).name == "New name"  # type: ignore[union-attr]


async def test_import_needs_the_header(registry: Registry, csv_file: Path) -> None:
    csv_file.write_text("id,title\n1,x\n")
    with pytest.raises(RegistryError, match="header must be code,name,parent"):
        await registry.import_csv(csv_file)
