"""Peer-chosen strings made safe before they become a header, an id, XML or a log field."""

from __future__ import annotations

import hashlib
import re

from .errors import truncate

_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def printable(value: str | None, limit: int = 200) -> str | None:
    """No control characters (NUL included), at most ``limit`` characters."""
    if value is None:
        return None
    return truncate(_UNPRINTABLE.sub("?", value), limit)


def derived_id(prefix: str, *parts: str | None) -> str:
    """A message id derived from peer strings, never built from them: a short string
    (AMQP allows 255 bytes) whatever they hold."""
    digest = hashlib.sha256("\x00".join(p or "" for p in parts).encode("utf-8", "replace"))
    return f"{prefix}:{digest.hexdigest()[:40]}"
