"""Size limits applied to untrusted packages (the CLI and workers take them from settings)."""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds checked before and while parsing, so a hostile package costs little.

    ``max_package_bytes`` is checked on the raw bytes before the parser sees them;
    ``max_attachment_bytes`` on each decoded attachment.
    """

    max_package_bytes: int = 32 * MiB
    max_attachment_bytes: int = 24 * MiB

    def __post_init__(self) -> None:
        if self.max_package_bytes <= 0 or self.max_attachment_bytes <= 0:
            raise ValueError("size limits must be positive")


DEFAULT_LIMITS = Limits()
