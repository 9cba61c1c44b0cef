"""AgencyCode: parsing, level, parents, patterns; examples from EDXML.md and properties."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backbone.agency import AgencyCode, AgencyCodeError, PatternError, topic_matches

level4 = st.from_regex(r"\A[0-9]{3}\Z")
level3 = st.from_regex(r"\A[0-9]{2}\Z")
level2 = st.from_regex(r"\A[0-9]{2}\Z")
level1 = st.from_regex(r"\A[A-Z][0-9]{2}\Z")
codes = st.builds(lambda a, b, c, d: AgencyCode(f"{a}.{b}.{c}.{d}"), level4, level3, level2, level1)


@pytest.mark.parametrize(
    ("text", "level"),
    [
        ("000.00.00.H41", 1),
        ("000.00.15.H41", 2),
        ("000.03.15.H41", 3),
        ("002.03.15.H41", 4),
        ("002.00.20.H13", 4),
        ("000.00.00.G22", 1),
        ("000.00.25.G14", 2),
    ],
)
def test_levels_from_the_format_notes(text: str, level: int) -> None:
    assert AgencyCode(text).level == level


def test_parent_chain_skips_a_zero_level() -> None:
    code = AgencyCode("002.00.20.H13")
    assert [str(p) for p in code.parents] == ["000.00.20.H13", "000.00.00.H13"]
    assert AgencyCode("002.03.15.H41").parents == (
        AgencyCode("000.03.15.H41"),
        AgencyCode("000.00.15.H41"),
        AgencyCode("000.00.00.H41"),
    )
    assert AgencyCode("000.00.00.H41").parent is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("28.22.H17", "found 3"),
        ("vxp.saas.03", "found 3"),
        ("null", "found 1"),
        ("", "empty"),
        (" 000.00.00.H41", "whitespace"),
        ("000.00.00.h41", "level-1 part"),
        ("00.00.00.H41", "level-4 part"),
        ("000.0A.00.H41", "level-3 part"),
        ("000.00.150.H41", "level-2 part"),
        ("000.00.00.H41.1", "found 5"),
        # ASCII only: Unicode digits and letters that \d or isdigit() would take
        ("\uff10\uff10\uff10.\uff10\uff10.\uff10\uff10.H\uff14\uff11", "level-4 part"),
        ("000.00.00.H\u0664\u0661", "level-1 part"),
        ("000.\u0966\u0966.00.H41", "level-3 part"),
        ("000.00.00.\uff2841", "level-1 part"),
    ],
)
def test_bad_identifiers_name_value_and_fault(text: str, reason: str) -> None:
    with pytest.raises(AgencyCodeError) as caught:
        AgencyCode.parse(text)
    assert reason in str(caught.value)
    assert repr(text) in str(caught.value)
    assert caught.value.value == text


def test_value_semantics() -> None:
    a, b = AgencyCode("000.00.00.H41"), AgencyCode.parse("000.00.00.H41")
    assert a == b and hash(a) == hash(b) and {a, b} == {a}
    assert a.routing_key == "000.00.00.H41" == str(a)
    with pytest.raises(AttributeError):
        a._text = "x"


@pytest.mark.parametrize(
    ("pattern", "code", "expected"),
    [
        ("*.*.*.H41", "002.03.15.H41", True),
        ("*.*.*.H41", "000.00.00.H14", False),
        ("*.*.15.H41", "000.03.15.H41", True),
        ("*.*.15.H41", "000.03.16.H41", False),
        ("000.00.00.*", "000.00.00.G22", True),
        ("000.00.00.*", "000.00.15.G22", False),
        ("#", "002.03.15.H41", True),
        ("#.H41", "002.03.15.H41", True),
        ("#.15.H41", "000.00.15.H41", True),
        ("002.#", "002.03.15.H41", True),
        ("002.#", "000.03.15.H41", False),
    ],
)
def test_binding_patterns(pattern: str, code: str, expected: bool) -> None:
    assert AgencyCode(code).matches(pattern) is expected


@pytest.mark.parametrize(
    "pattern",
    [
        "",
        "*.*.H41",
        "*.*.*.h41",
        "a.#",
        "*.*.*.*.*",
        "*..*.H41",
        "*.*.*.H\uff14\uff11",
        "\uff10\uff10.#",
    ],
)
def test_bad_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(PatternError):
        AgencyCode("000.00.00.H41").matches(pattern)


@given(codes)
def test_text_round_trips_and_validates(code: AgencyCode) -> None:
    assert AgencyCode.parse(str(code)) == code
    assert AgencyCode.is_valid(str(code))


@given(codes)
def test_level_is_the_deepest_non_zero_part(code: AgencyCode) -> None:
    lll, kk, mm, _ = code.parts
    expected = 4 if lll != "000" else 3 if kk != "00" else 2 if mm != "00" else 1
    assert code.level == expected
    assert 1 <= code.level <= 4


@given(codes)
def test_parents_climb_strictly_to_the_root(code: AgencyCode) -> None:
    chain = (code, *code.parents)
    levels = [c.level for c in chain]
    assert levels == sorted(levels, reverse=True) and len(set(levels)) == len(levels)
    assert chain[-1] == code.root and code.root.level == 1
    for child, parent in itertools.pairwise(chain):
        assert child.parts[3] == parent.parts[3]
        differing = [i for i in range(4) if child.parts[i] != parent.parts[i]]
        assert len(differing) == 1 and set(parent.parts[differing[0]]) == {"0"}
        assert child.is_under(parent)


@given(codes)
def test_every_agency_matches_its_province_and_own_key(code: AgencyCode) -> None:
    assert code.matches(f"*.*.*.{code.parts[3]}")
    assert code.matches("#")
    assert code.matches(code.routing_key)
    for parent in code.parents:
        assert not parent.matches(code.routing_key)


patterns = st.lists(
    st.sampled_from(["*", "#", "000", "00", "15", "H41", "002", "03"]), min_size=1, max_size=6
).map(".".join)


@given(patterns, codes)
def test_matcher_agrees_with_a_reference_on_any_pattern(pattern: str, code: AgencyCode) -> None:
    expected = _brute(pattern.split("."), code.routing_key.split("."))
    assert topic_matches(pattern, code.routing_key) is expected


def _brute(pattern: list[str], words: list[str]) -> bool:
    """Exhaustive expansion of '#' into 0..len(words) words, then word-by-word comparison."""
    if "#" not in pattern:
        return len(pattern) == len(words) and all(
            p in ("*", w) for p, w in zip(pattern, words, strict=True)
        )
    i = pattern.index("#")
    return any(
        _brute(pattern[:i] + ["*"] * n + pattern[i + 1 :], words) for n in range(len(words) + 1)
    )
