"""The lifecycle rules, as a table: current status, incoming status -> result."""

from __future__ import annotations

import pytest

from backbone.lifecycle import judge


@pytest.mark.parametrize(
    ("current", "code", "expected"),
    [
        (None, "01", "01"),
        ("01", "03", "03"),
        ("03", "04", "04"),
        ("04", "05", "05"),
        ("05", "06", "06"),
        ("01", "01", "01"),  # the same twice
        ("05", "04", "05"),  # late: kept in the timeline, never backwards
        (None, "05", "05"),  # skipping ahead is fine
        ("03", "02", "02"),  # refused after registering
        ("02", "02", "02"),
    ],
)
def test_statuses_that_apply(current: str | None, code: str, expected: str) -> None:
    verdict = judge(current, code, recall_open=False)
    assert verdict.anomaly is None and verdict.current == expected


@pytest.mark.parametrize(
    ("current", "code", "reason"),
    [
        ("02", "06", "02 is final"),
        ("02", "01", "02 is final"),
        ("06", "04", "06 is final"),
        ("06", "02", "06 is final"),
        ("01", "15", "no recall"),
        ("01", "16", "no recall"),
        ("01", "99", "not a lifecycle status"),
    ],
)
def test_contradictions_are_anomalies(current: str, code: str, reason: str) -> None:
    verdict = judge(current, code, recall_open=False)
    assert verdict.anomaly is not None and reason in verdict.anomaly
    assert verdict.current == current  # not applied


def test_a_status_issued_before_the_final_one_is_not_a_contradiction() -> None:
    assert judge("06", "04", recall_open=False, after_final=False).anomaly is None
    assert judge("06", "04", recall_open=False, after_final=False).current == "06"
    assert judge("02", "06", recall_open=False, after_final=False).current == "02"


def test_recall() -> None:
    assert judge("03", "13", recall_open=False) == judge("03", "13", recall_open=True)
    assert judge("03", "15", recall_open=True).anomaly is None
    assert judge("03", "16", recall_open=True).current == "03"
