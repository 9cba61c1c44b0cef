"""File names made from what a package says (pure): an attachment's name, a document's
folder. Whatever the package holds, the name is one path component, printable, short
enough for every file system, not a name Windows reserves, and unique in its folder."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Collection

MOST_BYTES = 150  # of a name in UTF-8: room under the usual 255 for a suffix and a counter
RESERVED = re.compile(r"(CON|PRN|AUX|NUL|COM[0-9]|LPT[0-9])(\..*)?", re.IGNORECASE)
UNSAFE = set('<>:"/\\|?*')


def safe_name(name: str | None, taken: Collection[str] = (), fallback: str = "attachment") -> str:
    """``name`` as one safe component, not in ``taken`` (compared case-insensitively, as
    Windows and macOS do): ``a.pdf``, then ``a (2).pdf``..."""
    base = _component(name or "") or fallback
    stem, dot, suffix = base.rpartition(".")
    if not dot or not stem or len(suffix) > 10:
        stem, suffix = base, ""
    folded = {t.casefold() for t in taken}
    candidate, number = base, 1
    while candidate.casefold() in folded:
        number += 1
        candidate = f"{stem} ({number})" + (f".{suffix}" if suffix else "")
    return candidate


def document_folder(sender: str | None, document_id: str | None, unique: str) -> str:
    """A received document's folder: its sender and DocumentId made safe, and a short
    digest of ``unique`` (the backbone's id of the copy), so two documents never share
    one and the same copy always lands in the same."""
    digest = hashlib.sha256(unique.encode()).hexdigest()[:12]
    said = f"{sender or 'unknown'} {document_id or ''}".strip()
    label = _component(said.replace("/", "_").replace("\\", "_"))  # all of it, not its end
    return f"{label or 'document'} {digest}"


def _component(name: str) -> str:
    """The last path part of ``name``, cleaned; empty if nothing is left."""
    text = unicodedata.normalize("NFC", name)
    text = re.split(r"[/\\]", text)[-1]  # a path's last part: never a directory
    text = "".join(
        "_" if c in UNSAFE else c
        for c in text
        if unicodedata.category(c)[0] != "C"  # control, format, unassigned, NUL
    )
    text = text.strip().rstrip(". ")  # Windows drops trailing dots and spaces
    text = text.lstrip(".")  # no hidden files, no "." or ".."
    if RESERVED.fullmatch(text):
        text = f"_{text}"
    return _shortened(text)


def _shortened(name: str) -> str:
    """At most MOST_BYTES in UTF-8, its extension kept, never a broken character."""
    if len(name.encode()) <= MOST_BYTES:
        return name
    stem, dot, suffix = name.rpartition(".")
    if not dot or len(suffix) > 10:
        stem, suffix = name, ""
    room = MOST_BYTES - len(suffix.encode()) - (1 if suffix else 0)
    cut = stem.encode()[:room].decode(errors="ignore").rstrip(". ")
    return cut + (f".{suffix}" if suffix else "")
