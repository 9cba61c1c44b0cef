"""Property: whatever is done to a valid package, the format layer returns a model or raises
our PackageError (nothing else), and every model it returns survives build -> parse unchanged."""

from __future__ import annotations

import contextlib
import copy

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from lxml import etree

from backbone import edxml
from backbone.errors import PackageError

from ..conftest import make_document, make_status
from .test_parse import full_document

SEEDS = [edxml.build(make_document()), edxml.build(full_document()), edxml.build(make_status())]

# Characters lxml accepts in text: no controls other than tab/newline, no surrogates.
xml_text = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), whitelist_characters="\t\n"), max_size=40
)
interesting_text = st.one_of(
    xml_text,
    st.sampled_from(
        [
            "",
            " ",
            "000.00.00.H41",
            "28.22.H17",
            "null",
            "01",
            "07",
            "2026/11/23",
            "2026/11/23 09:30:00",
            "cid:x",
            "QUJD",
            "QUJD=",
            "=",
            "1.0",
        ]
    ),
)
operations = st.lists(
    st.tuples(
        st.sampled_from(["drop", "duplicate", "swap", "text", "move-up"]),
        st.integers(min_value=0, max_value=10_000),
        interesting_text,
    ),
    min_size=1,
    max_size=4,
)


def _mutate(seed: bytes, ops: list[tuple[str, int, str]]) -> bytes:
    root = etree.fromstring(seed)
    for op, index, text in ops:
        elements = [e for e in root.iter() if e is not root]
        if not elements:
            break
        target = elements[index % len(elements)]
        parent = target.getparent()
        assert parent is not None
        if op == "drop":
            parent.remove(target)
        elif op == "duplicate":
            target.addnext(copy.deepcopy(target))
        elif op == "swap":
            sibling = target.getnext()
            if sibling is not None:
                sibling.addnext(target)
        elif op == "text":
            target.text = text
        elif op == "move-up" and parent is not root:
            parent.addnext(target)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _outcome(data: bytes) -> None:
    try:
        package = edxml.parse(data)
    except PackageError:
        return
    with contextlib.suppress(PackageError):
        edxml.check(package)
    assert edxml.parse(edxml.build(package, validate=False)) == package


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEEDS), operations)
@example(SEEDS[1], [("drop", 5, ""), ("text", 6046, "")])  # an empty OrganId: written back
def test_tree_mutations_give_a_model_or_our_error(
    seed: bytes, ops: list[tuple[str, int, str]]
) -> None:
    _outcome(_mutate(seed, ops))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(SEEDS), st.integers(min_value=0), st.binary(max_size=8), st.booleans())
def test_byte_mutations_give_a_model_or_our_error(
    seed: bytes, position: int, junk: bytes, truncate: bool
) -> None:
    at = position % len(seed)
    data = seed[:at] if truncate else seed[:at] + junk + seed[at + len(junk) :]
    _outcome(data)


def test_mutations_reach_both_outcomes() -> None:
    """The property above is only meaningful if mutants both pass and fail parsing."""
    outcomes = set()
    for index in range(0, 200, 7):
        data = _mutate(SEEDS[1], [("text", index, " ")])
        try:
            edxml.parse(data)
            outcomes.add("model")
        except PackageError:
            outcomes.add("error")
    assert outcomes == {"model", "error"}
