"""The lifecycle of one document at one recipient: which status applies, which is an anomaly.

Pure rules, no I/O; the tracker applies them. Statuses arrive out of order, twice, or
after a final one: the current status is the furthest reached and never moves back;
02 (refused) and 06 (done) are final, and a status issued after them is an anomaly;
13 (recall, from the sender) opens a recall that 15 or 16 closes. What makes no sense is
kept as an anomaly and not applied.
"""

from __future__ import annotations

from dataclasses import dataclass

PROGRESS = {"01": 1, "03": 2, "04": 3, "05": 4, "06": 5}
FINAL = frozenset({"02", "06"})
RECALL = "13"
RECALL_ANSWERS = frozenset({"15", "16"})
COLUMN = {
    "01": "arrived_at",
    "02": "refused_at",
    "03": "accepted_at",
    "04": "assigned_at",
    "05": "processing_at",
    "06": "done_at",
    "13": "recall_requested_at",
    "15": "recall_agreed_at",
    "16": "recall_refused_at",
}


@dataclass(frozen=True, slots=True)
class Verdict:
    """``anomaly`` is None when the status applies; ``current`` is the status afterwards."""

    current: str | None
    anomaly: str | None = None


def judge(current: str | None, code: str, recall_open: bool, after_final: bool = True) -> Verdict:
    """What a status ``code`` does to a delivery whose current status is ``current``.

    ``after_final``: the status was issued (package time) after the final status reached.
    Statuses overtake each other on the way; one issued before 06 but arriving after it
    belongs in the timeline, it contradicts nothing.
    """
    if code == RECALL:
        return Verdict(current)
    if code in RECALL_ANSWERS:
        if not recall_open:
            return Verdict(current, f"{code} answers a recall, but no recall (13) is open")
        return Verdict(current)
    if current in FINAL and code != current and not after_final:
        return Verdict(current)  # an earlier status that arrived late
    if code == "02":
        if current == "06":
            return Verdict(current, "02 (refused) after 06 (done): 06 is final")
        return Verdict("02")
    if code not in PROGRESS:
        return Verdict(current, f"{code} is not a lifecycle status")
    if current == "02":
        return Verdict(current, f"{code} after 02 (refused): 02 is final")
    if current == "06" and code != "06":
        return Verdict(current, f"{code} after 06 (done): 06 is final")
    if current is None or PROGRESS[code] > PROGRESS.get(current, 0):
        return Verdict(code)
    return Verdict(current)  # earlier than what was reached: kept in the timeline only
