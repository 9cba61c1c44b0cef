"""What a folder adapter has done, kept beside its folders (``.state/state.sqlite``), so that a
restart neither sends a file again nor writes a received document twice.

SQLite in FULL synchronous mode: a row is on disk when the call returns. Each call is a
few milliseconds on a local disk, so it runs on the event loop.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS sent (
    sha256 TEXT PRIMARY KEY,       -- of the file's bytes
    file TEXT NOT NULL,            -- its name in outbox/ (and then sent/)
    document_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    message_id TEXT NOT NULL,
    sent_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sent_document ON sent (sender, document_id);
CREATE TABLE IF NOT EXISTS received (
    message_id TEXT PRIMARY KEY,   -- the copy's: stable across redeliveries
    folder TEXT NOT NULL,          -- its folder in inbox/
    sender TEXT NOT NULL,
    document_id TEXT NOT NULL,
    recipient TEXT NOT NULL,
    received_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS received_document ON received (sender, document_id);
"""


class State:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def sent(self, sha256: str) -> str | None:
        """The message id a file with these bytes was sent with, if it was."""
        row = self.db.execute("SELECT message_id FROM sent WHERE sha256 = ?", (sha256,)).fetchone()
        return None if row is None else str(row[0])

    def record_sent(
        self, sha256: str, file: str, document_id: str, sender: str, message_id: str
    ) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO sent VALUES (?, ?, ?, ?, ?, ?)",
            (sha256, file, document_id, sender, message_id, _now()),
        )

    def sent_file(self, sender: str, document_id: str) -> str | None:
        """The file that carried a sent document (the newest, if sent more than once)."""
        row = self.db.execute(
            "SELECT file FROM sent WHERE sender = ? AND document_id = ? ORDER BY sent_at DESC",
            (sender, document_id),
        ).fetchone()
        return None if row is None else str(row[0])

    def received(self, message_id: str) -> str | None:
        """The inbox folder a copy was written to, if it was."""
        row = self.db.execute(
            "SELECT folder FROM received WHERE message_id = ?", (message_id,)
        ).fetchone()
        return None if row is None else str(row[0])

    def record_received(
        self, message_id: str, folder: str, sender: str, document_id: str, recipient: str
    ) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO received VALUES (?, ?, ?, ?, ?, ?)",
            (message_id, folder, sender, document_id, recipient, _now()),
        )

    def received_folder(self, sender: str, document_id: str) -> tuple[str, str] | None:
        """The folder and the recipient of a received document, for a status about it."""
        row = self.db.execute(
            "SELECT folder, recipient FROM received WHERE sender = ? AND document_id = ? "
            "ORDER BY received_at DESC",
            (sender, document_id),
        ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))


def _now() -> str:
    return datetime.now(UTC).isoformat()
