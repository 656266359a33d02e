"""TextFile: character slicing of mmapped text through checkpoints."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlm_rs.canonical import build_offsets
from rlm_rs.textfile import TextFile


def _write(tmp_path: Path, text: str, interval: int) -> tuple[str, str]:
    text_path, offsets_path = tmp_path / "t.txt", tmp_path / "t.offsets.json"
    text_path.write_text(text, encoding="utf-8", newline="")
    offsets_path.write_text(json.dumps(build_offsets(text, "d", interval=interval)))
    return str(text_path), str(offsets_path)


def test_random_slices_match_str_slicing(tmp_path: Path) -> None:
    rng = random.Random(7)
    text = "".join(rng.choice("ab c\né€😀ñ") for _ in range(5_000))
    text_path, offsets_path = _write(tmp_path, text, interval=97)
    doc = TextFile.open_path(text_path, offsets_path)
    assert len(doc) == len(text)
    for _ in range(500):
        a, b = rng.randrange(-10, len(text) + 10), rng.randrange(-10, len(text) + 10)
        start = min(max(a, 0), len(text))
        end = min(max(b, start), len(text))
        assert doc.slice(a, b) == text[start:end]
        assert doc.char_offset(doc.byte_offset(start)) == start


def test_from_fds_reads_without_paths(tmp_path: Path) -> None:
    text = "héllo wörld " * 100
    text_path, offsets_path = _write(tmp_path, text, interval=10)
    text_fd, offsets_fd = os.open(text_path, os.O_RDONLY), os.open(offsets_path, os.O_RDONLY)
    doc = TextFile.from_fds(text_fd, offsets_fd)
    assert doc.slice(595, 610) == text[595:610]
    os.close(text_fd)
    os.close(offsets_fd)


def test_missing_offsets_are_computed(tmp_path: Path) -> None:
    text = "ü" * 25_000
    text_path, _ = _write(tmp_path, text, interval=10)
    doc = TextFile.open_path(text_path)
    assert doc.slice(19_999, 20_002) == "üüü"


def test_empty_text(tmp_path: Path) -> None:
    text_path, offsets_path = _write(tmp_path, "", interval=10)
    doc = TextFile.open_path(text_path, offsets_path)
    assert len(doc) == 0 and doc.slice(0, 10) == ""


def test_offsets_for_another_text_are_refused(tmp_path: Path) -> None:
    text_path, offsets_path = _write(tmp_path, "abc", interval=10)
    Path(text_path).write_text("abcdef")
    try:
        TextFile.open_path(text_path, offsets_path)
    except ValueError as exc:
        assert "byte_length" in str(exc)
    else:
        raise AssertionError("mismatched offsets were accepted")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.text(alphabet="ab \n\u00e9\u20ac\U0001f600\u6f22", max_size=400),
    st.integers(1, 40),
    st.lists(st.tuples(st.integers(-450, 450), st.integers(-450, 450)), max_size=20),
)
def test_slices_match_str_for_any_text_and_interval(
    tmp_path: Path, text: str, interval: int, bounds: list[tuple[int, int]]
) -> None:
    text_path, offsets_path = _write(tmp_path, text, interval=interval)
    doc = TextFile.open_path(text_path, offsets_path)
    try:
        assert doc.char_length == len(text)
        for a, b in bounds:
            start = min(max(a, 0), len(text))
            end = min(max(b, start), len(text))
            assert doc.slice(a, b) == text[start:end]
    finally:
        doc.close()
