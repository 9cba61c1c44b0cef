"""Issue 13, point 24: every malformed BACKBONE_* setting fails with one line naming it."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from pydantic import ValidationError

from backbone.config import Settings, describe


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("BACKBONE_LOG_LEVEL", "loud", "'DEBUG', 'INFO', 'WARNING' or 'ERROR'"),
        ("BACKBONE_TIMEZONE", "Mars/Base", "is not a time zone"),
        ("BACKBONE_HOLIDAYS", "2026-13-01", "month value is outside"),
        ("BACKBONE_DATABASE_URL", "garbage", "not a database URL"),
        ("BACKBONE_DATABASE_URL", "mysql://h/db", "is not sqlite or postgresql"),
        ("BACKBONE_AMQP_URL", "not a url", "amqp://"),
        ("BACKBONE_MGMT_URL", "http://admin:pw@host:xx/", "not a URL"),
        ("BACKBONE_CRL_FILES", "[unterminated", "not a JSON list"),
    ],
)
def test_a_malformed_setting_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, says: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    line = describe(caught.value)
    assert "\n" not in line
    assert line.startswith(f"malformed setting {variable}: ")
    assert says in line
    assert "pw" not in line  # a URL's password never shows


def test_plain_and_listed_values_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKBONE_CRL_FILES", "pki/crl.pem")
    monkeypatch.setenv("BACKBONE_HOLIDAYS", "2026-09-02, 2026-09-03")
    monkeypatch.setenv("BACKBONE_LOG_LEVEL", "debug")
    settings = Settings()
    assert settings.crl_files == [Path("pki/crl.pem")]
    assert settings.holidays == [date(2026, 9, 2), date(2026, 9, 3)]
    assert settings.log_level == "DEBUG"
    monkeypatch.setenv("BACKBONE_CRL_FILES", '["a.pem", "b.pem"]')
    assert Settings().crl_files == [Path("a.pem"), Path("b.pem")]
