"""`backbone demo` tells the whole story on a real broker and cleans up after itself."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from backbone.broker.mgmt import Management
from backbone.cli import app

from .conftest import Broker

pytestmark = pytest.mark.pipeline


def test_the_demo_routes_answers_and_refuses(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKBONE_AMQP_URL", broker.amqp_url)
    monkeypatch.setenv("BACKBONE_MGMT_URL", broker.mgmt.url)
    result = CliRunner().invoke(app, ["demo"])
    assert result.exit_code == 0, result.output
    story = " ".join(result.stdout.split())
    for line in (
        "000.00.00.H41 reported 03 (accepted) on '7816/VPCP-TTĐT'",
        "000.00.00.H14 reported 03 (accepted) on '7816/VPCP-TTĐT'",
        "000.00.15.H41 reported 01 (arrived) on '7817/VPCP-TTĐT'",
        "001.03.15.H41 reported 01 (arrived) on '7817/VPCP-TTĐT'",
        "'7818/VPCP-TTĐT' was refused at check 5-signature: digest-mismatch",
        "'7819/VPCP-TTĐT' was refused at check 7-recipients: unknown-recipient",
        "Cao Bằng reading Nghệ An's inbox: refused by the broker (ACCESS_REFUSED)",
        "Cao Bằng publishing as the ministry: refused by the broker (ACCESS_REFUSED)",
    ):
        assert line in story
    assert not [v for v in _vhosts(broker.mgmt) if v.startswith("demo-")]  # cleaned up
    assert broker.mgmt.user("000.00.00.G22") is None  # and so are its users


def _vhosts(management: Management) -> list[str]:
    return [str(v["name"]) for v in management._call("GET", "/vhosts")]
