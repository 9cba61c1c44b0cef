"""Agency identifiers (mã định danh) and the topic patterns that select them.

An identifier is four dot-separated parts, most specific first: ``LLL.KK.MM.XNN``.
Because it is dot-separated it is also a RabbitMQ topic routing key, so the same
pattern language (``*`` one word, ``#`` zero or more words) selects agencies for
gateway bindings and for registry look-ups alike.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final

from .errors import BackboneError

__all__ = ["AgencyCode", "AgencyCodeError", "PatternError", "topic_matches", "validate_pattern"]

# ASCII only, spelled out: ``\d`` would take full-width and other Unicode digits
# (``０００.００.００.H４１``), which no broker name or routing key should carry.
_PART_SHAPES: Final = (
    ("level-4 part (LLL)", re.compile(r"[0-9]{3}"), "three digits 0-9"),
    ("level-3 part (KK)", re.compile(r"[0-9]{2}"), "two digits 0-9"),
    ("level-2 part (MM)", re.compile(r"[0-9]{2}"), "two digits 0-9"),
    (
        "level-1 part (XNN)",
        re.compile(r"[A-Z][0-9]{2}"),
        "an upper-case letter A-Z and two digits 0-9",
    ),
)
_ZERO_PARTS: Final = ("000", "00", "00")
_FULL: Final = re.compile(r"[0-9]{3}\.[0-9]{2}\.[0-9]{2}\.[A-Z][0-9]{2}")


class AgencyCodeError(BackboneError, ValueError):
    """A value is not an agency identifier; the message names the value and the fault.
    A ValueError too, so that pydantic validators report it as a validation error."""

    def __init__(self, value: str, reason: str) -> None:
        self.value = value
        self.reason = reason
        super().__init__(f"{_show(value)} is not an agency identifier: {reason}")


class PatternError(BackboneError, ValueError):
    """A binding pattern is not a usable topic pattern over agency identifiers (a ValueError
    too, as AgencyCodeError)."""

    def __init__(self, pattern: str, reason: str) -> None:
        self.pattern = pattern
        self.reason = reason
        super().__init__(f"{_show(pattern)} is not an agency pattern: {reason}")


def _show(value: str, limit: int = 60) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "…")


class AgencyCode:
    """A validated agency identifier; immutable, hashable, ordered by its text."""

    __slots__ = ("_parts", "_text")

    _parts: tuple[str, str, str, str]
    _text: str

    def __init__(self, text: str) -> None:
        if not isinstance(text, str):
            raise TypeError(f"agency identifier must be a string, not {type(text).__name__}")
        if not _FULL.fullmatch(text):
            _explain(text)
        parts = text.split(".")
        object.__setattr__(self, "_parts", (parts[0], parts[1], parts[2], parts[3]))
        object.__setattr__(self, "_text", text)

    @classmethod
    def parse(cls, text: str) -> AgencyCode:
        """Parse ``text`` (surrounding whitespace is not tolerated: identifiers are keys)."""
        return _parse_cached(text)

    @classmethod
    def is_valid(cls, text: str) -> bool:
        return isinstance(text, str) and _FULL.fullmatch(text) is not None

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("AgencyCode is immutable")

    def __str__(self) -> str:
        return self._text

    def __repr__(self) -> str:
        return f"AgencyCode({self._text!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AgencyCode):
            return self._text == other._text
        return NotImplemented

    def __lt__(self, other: AgencyCode) -> bool:
        return self._text < other._text

    def __hash__(self) -> int:
        return hash(self._text)

    @property
    def parts(self) -> tuple[str, str, str, str]:
        """``(LLL, KK, MM, XNN)`` as written."""
        return self._parts

    @property
    def level(self) -> int:
        """1 for a ministry or province, down to 4 (commune): the deepest non-zero part."""
        for index, part in enumerate(self._parts[:3]):
            if part != _ZERO_PARTS[index]:
                return 4 - index
        return 1

    @property
    def parent(self) -> AgencyCode | None:
        """The unit directly above (its deepest non-zero part zeroed), None at level 1.

        A zero level between non-zero ones is allowed (``002.00.20.H13`` sits directly
        under ``000.00.20.H13``), so a parent may be more than one level up.
        """
        level = self.level
        if level == 1:
            return None
        index = 4 - level
        parts = list(self._parts)
        parts[index] = _ZERO_PARTS[index]
        return AgencyCode(".".join(parts))

    @property
    def parents(self) -> tuple[AgencyCode, ...]:
        """The chain of units above, nearest first, ending with the level-1 body."""
        chain: list[AgencyCode] = []
        current = self.parent
        while current is not None:
            chain.append(current)
            current = current.parent
        return tuple(chain)

    @property
    def root(self) -> AgencyCode:
        """The level-1 body (ministry or province) this agency belongs to."""
        return AgencyCode(f"000.00.00.{self._parts[3]}")

    @property
    def routing_key(self) -> str:
        """The topic routing key of this agency: the identifier itself."""
        return self._text

    def is_under(self, other: AgencyCode) -> bool:
        """True when ``other`` is this agency or one of the units above it."""
        return other == self or other in self.parents

    def matches(self, pattern: str) -> bool:
        """Whether a topic binding pattern (``*.*.*.H41``, ``#``) selects this agency."""
        validate_pattern(pattern)
        return topic_matches(pattern, self._text)


def _explain(text: str) -> None:
    """Raise the most specific reason ``text`` is not an identifier."""
    if text == "":
        raise AgencyCodeError(text, "it is empty")
    if text != text.strip():
        raise AgencyCodeError(text, "it has surrounding whitespace")
    parts = text.split(".")
    if len(parts) != 4:
        raise AgencyCodeError(
            text, f"expected four dot-separated parts LLL.KK.MM.XNN, found {len(parts)}"
        )
    for part, (name, shape, described) in zip(parts, _PART_SHAPES, strict=True):
        if not shape.fullmatch(part):
            raise AgencyCodeError(text, f"the {name} {part!r} must be {described}")
    raise AgencyCodeError(text, "expected LLL.KK.MM.XNN")  # pragma: no cover - regex agrees


@lru_cache(maxsize=65536)
def _parse_cached(text: str) -> AgencyCode:
    return AgencyCode(text)


def validate_pattern(pattern: str) -> str:
    """Check a binding pattern: words are ``*``, ``#`` or an identifier part in its place."""
    if not isinstance(pattern, str) or pattern == "":
        raise PatternError(str(pattern), "it is empty")
    words = pattern.split(".")
    if "#" not in words:
        if len(words) != 4:
            raise PatternError(pattern, f"expected four words (or a '#'), found {len(words)}")
        for word, (name, shape, described) in zip(words, _PART_SHAPES, strict=True):
            if word != "*" and not shape.fullmatch(word):
                raise PatternError(pattern, f"the {name} {word!r} must be '*' or {described}")
        return pattern
    for word in words:
        if word not in ("*", "#") and not any(s.fullmatch(word) for _, s, _ in _PART_SHAPES):
            raise PatternError(
                pattern, f"the word {word!r} is neither '*', '#' nor an identifier part"
            )
    return pattern


def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching, as RabbitMQ does it: ``*`` is one word, ``#`` zero or more."""
    return _match(tuple(pattern.split(".")), tuple(key.split(".")))


@lru_cache(maxsize=4096)
def _match(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_match(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    return (head == "*" or head == words[0]) and _match(rest, words[1:])
