"""Shared fixtures: valid packages built by the project's own factory, and ../shared."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import pytest

from backbone import edxml
from backbone.edxml.factory import File, new_document, new_status

NOW = datetime(2026, 11, 23, 9, 30, 0)
SENDER = "000.00.00.G22"
RECIPIENTS = ("000.00.00.H41", "000.03.15.H41")


def make_document(**overrides: object) -> edxml.DocumentPackage:
    """A valid document package with one ~5 KB attachment (about 8 KB on the wire)."""
    fields: dict[str, object] = {
        "sender": SENDER,
        "recipients": RECIPIENTS,
        "subject": "V/v kết nối, liên thông phần mềm quản lý văn bản",
        "number": "7816",
        "notation": "VPCP-TTĐT",
        "files": [File("cong-van.pdf", bytes(range(256)) * 20, "application/pdf")],
        "now": NOW,
    }
    fields.update(overrides)
    return new_document(**fields)  # type: ignore[arg-type]


def make_status(code: str = "01", **overrides: object) -> edxml.StatusPackage:
    fields: dict[str, object] = {
        "reporter": RECIPIENTS[0],
        "document": make_document(),
        "status_code": code,
        "description": "Đã đến",
        "now": NOW,
    }
    fields.update(overrides)
    return new_status(**fields)  # type: ignore[arg-type]


@pytest.fixture
def document() -> edxml.DocumentPackage:
    return make_document()


@pytest.fixture
def document_bytes(document: edxml.DocumentPackage) -> bytes:
    return edxml.build(document)


@pytest.fixture
def status_bytes() -> bytes:
    return edxml.build(make_status())


SHARED = Path(os.environ.get("BACKBONE_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))


@pytest.fixture(scope="session")
def interop_dir() -> Path:
    """The real packages of ../shared/interop: skipped in a user's clone, required in CI."""
    folder = SHARED / "interop" / "vdxp-sdk-samples"
    if not folder.is_dir():
        message = f"{folder} is absent: the interop samples live beside the project, in shared/"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI is set, so they must be there)")
        pytest.skip(message)
    return folder
