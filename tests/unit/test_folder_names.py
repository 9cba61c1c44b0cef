"""A package's names as files: one safe component, unique in its folder, whatever it says."""

from __future__ import annotations

import pytest

from adapters.folder.names import MOST_BYTES, document_folder, safe_name


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("Tờ trình.pdf", "Tờ trình.pdf"),
        ("../../etc/x", "x"),
        ("/abs/path", "path"),
        ("C:\\Windows\\system.ini", "system.ini"),
        ("CON", "_CON"),
        ("con.txt", "_con.txt"),
        ("LPT1", "_LPT1"),
        ("a\x00b.pdf", "ab.pdf"),
        ("..", "attachment"),
        ("...", "attachment"),
        (".hidden", "hidden"),
        ("name. ", "name"),
        ("", "attachment"),
        (None, "attachment"),
        ("a:b*c?.doc", "a_b_c_.doc"),
        ("\u202eexe.pdf", "exe.pdf"),  # a right-to-left override hides nothing
        ("new\nline.txt", "newline.txt"),
    ],
)
def test_a_name_becomes_one_safe_component(given: str | None, expected: str) -> None:
    assert safe_name(given) == expected


def test_a_long_name_keeps_its_extension_and_whole_characters() -> None:
    name = safe_name("ệ" * 1000 + ".pdf")
    assert name.endswith(".pdf") and len(name.encode()) <= MOST_BYTES
    assert name[:-4] == "ệ" * len(name[:-4])  # no broken character


def test_names_already_taken_are_counted_case_insensitively() -> None:
    taken = ["a.pdf", "A (2).PDF"]
    assert safe_name("a.pdf", taken) == "a (3).pdf"
    assert safe_name("README", ["readme"]) == "README (2)"


def test_a_document_s_folder_is_safe_unique_and_stable() -> None:
    first = document_folder("000.00.00.H41", "000.00.00.H41,2026/12/06,7/UBND-VP", "b-1:H14")
    assert "/" not in first and first.startswith("000.00.00.H41 000.00.00.H41,2026_12_06,7_UBND-VP")
    assert first == document_folder(
        "000.00.00.H41", "000.00.00.H41,2026/12/06,7/UBND-VP", "b-1:H14"
    )
    assert first != document_folder(
        "000.00.00.H41", "000.00.00.H41,2026/12/06,7/UBND-VP", "b-2:H14"
    )
    assert document_folder(None, "../..", "x").startswith("unknown")
