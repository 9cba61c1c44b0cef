"""Size limits applied to untrusted packages (the CLI and workers take them from settings)."""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds checked before and while parsing, so a hostile package costs little.

    ``max_package_bytes`` is checked on the raw bytes before the parser sees them;
    ``max_attachment_bytes`` on each decoded attachment.

    ``max_markup`` bounds the tree before it is built: it counts every ``<`` in the
    bytes (start, end and empty-element tags, comments, processing instructions), so it
    is at least the number of elements. Real packages have a few hundred; a package to
    the 1,000 recipients of the cap on fan-out has about 4,100. A libxml2 node costs
    about 150 bytes, so the tree stays under about 30 MB.

    ``max_namespace_declarations`` bounds the ``xmlns`` declarations of the whole package,
    and so the namespaces in scope at any element: libxml2's handling of a start tag and
    every subtree operation (the XML-DSig schema check, the canonical form of SignedInfo)
    cost the number in scope, so without a bound a package of unused declarations costs
    quadratic time. Real packages declare 2 to 5.
    """

    max_package_bytes: int = 32 * MiB
    max_attachment_bytes: int = 24 * MiB
    max_markup: int = 200_000
    max_namespace_declarations: int = 1024

    def __post_init__(self) -> None:
        if (
            min(
                self.max_package_bytes,
                self.max_attachment_bytes,
                self.max_markup,
                self.max_namespace_declarations,
            )
            <= 0
        ):
            raise ValueError("size limits must be positive")


DEFAULT_LIMITS = Limits()
