"""Canonical text: the rules hold on any input, and parsing text is linear.

The linearity test times 1 MB and 4 MB of each pathological input in CPU time
(best of 3) and asserts the ratio stays far from quadratic (linear is ~4,
quadratic 16); throughput numbers are printed by `rlm-rs bench ingest`.
"""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlm_rs.bench.ingest import PATHOLOGICAL, cpu_seconds
from rlm_rs.ingestion.canonical_text import CGJ, canonical_block, stream_safe, tidy_lines
from rlm_rs.ingestion.parsers import ParseFailure, markdown_headings, parse_document

# Characters that exercise every rule: line-end spaces, CR, NUL, BOM, a base
# letter and combining marks (two classes, so NFC reorders and composes).
ALPHABET = [" ", "\t", "\u00a0", "\n", "\r", "\x00", "\ufeff", "a", "e", "é", "\u0301", "\u0316", "#",
            "\x0b", "\u0316" * 17, "\u0301\u0316" * 9]  # fmt: skip
texts = st.lists(st.sampled_from(ALPHABET), max_size=80).map("".join)


def _non_starter(char: str) -> bool:
    return bool(unicodedata.combining(unicodedata.normalize("NFKD", char)[0]))


def reference(text: str) -> str:
    """The rules of docs/ingestion.md, written the slow and obvious way."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    out, run = [], 0
    for char in text:
        run = run + 1 if _non_starter(char) else 0
        if run == 31:
            out.append(CGJ)
            run = 1
        out.append(char)
    return reference_lines(unicodedata.normalize("NFC", "".join(out))).lstrip("\ufeff\n")


def reference_lines(text: str) -> str:
    text = "\n".join(line.rstrip(" \t\u00a0") for line in text.split("\n"))
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.strip("\n")


@settings(max_examples=400, deadline=None)
@given(texts)
def test_canonical_block_follows_the_rules(text: str) -> None:
    assert canonical_block(text) == reference(text)


@settings(max_examples=300, deadline=None)
@given(texts, st.integers(min_value=1, max_value=12))
def test_lines_are_tidied_the_same_at_any_chunk_size(text: str, chunk: int) -> None:
    assert tidy_lines(text, chunk) == reference_lines(text)


@settings(max_examples=200, deadline=None)
@given(texts)
def test_canonical_block_is_idempotent_and_nfc(text: str) -> None:
    once = canonical_block(text)
    assert canonical_block(once) == once
    assert unicodedata.is_normalized("NFC", once)


def test_long_runs_of_combining_marks_get_a_joiner_every_30() -> None:
    assert stream_safe("a" + "\u0316" * 30) == "a" + "\u0316" * 30
    assert stream_safe("a" + "\u0316" * 61) == "a" + (("\u0316" * 30 + CGJ) * 2) + "\u0316"
    astral = "\U0001d165"  # MUSICAL SYMBOL COMBINING STEM: a non-starter beyond the BMP
    assert stream_safe("x😀" + astral * 31) == "x😀" + astral * 30 + CGJ + astral


def test_every_line_loses_trailing_spaces_and_nul_goes_before_nfc() -> None:
    assert canonical_block("a \t\n\n\n\nb\u00a0 ") == "a\n\nb"
    assert canonical_block("e\x00\u0301") == "\u00e9"  # not "e" + a stray mark


# The v1 heading regex (quadratic on long runs of spaces), kept as the oracle.
_V1_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.sampled_from(["#", " ", "\t", "\n", "a", "b", "\x0b", "\u00a0"]), max_size=60).map("".join)
)
def test_markdown_headings_match_the_v1_regex(text: str) -> None:
    expected = [(len(m.group(1)), m.group(2).strip(), m.start()) for m in _V1_HEADING.finditer(text)]
    assert [(h.level, h.title, h.start_char) for h in markdown_headings(text)] == expected


@pytest.mark.parametrize("name", list(PATHOLOGICAL))
def test_parsing_pathological_text_is_linear(name: str) -> None:
    small, large = (PATHOLOGICAL[name](n).encode() for n in (1_000_000, 4_000_000))
    small_seconds, large_seconds = cpu_seconds(small, 3), cpu_seconds(large, 3)
    assert large_seconds < 5, f"{name}: 4 MB took {large_seconds:.1f} s of CPU"
    # linear: ~4; quadratic: 16. The 5 ms floor keeps timer noise on the fastest inputs out of it.
    assert large_seconds / max(small_seconds, 0.005) < 10, (name, small_seconds, large_seconds)


def test_text_is_parsed_under_the_timeout() -> None:
    # A forked child cannot even start in a millisecond: the text path has the wall too.
    with pytest.raises(ParseFailure) as caught:
        parse_document(b"plain words\n" * 100_000, "text/plain", "a.txt", timeout_seconds=0.001)
    assert caught.value.code == "PARSE_TIMEOUT"
