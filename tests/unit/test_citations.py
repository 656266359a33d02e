"""Citations: merge per document, recompute checksums, verify."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from rlm_rs.canonical import build_offsets, checksum_text
from rlm_rs.citations import CitedDocument, build_citations, merge_spans, verify_ref
from rlm_rs.textfile import TextFile
from rlm_rs.v1.common_pb2 import Span

TEXT = "The quick brown fox jumps over the lazy dog. Café au lait."


def _doc(tmp_path: Path) -> CitedDocument:
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    (tmp_path / "o.json").write_text(json.dumps(build_offsets(TEXT, "d1", interval=8)))
    return CitedDocument("d1", TextFile.open_path(str(tmp_path / "t.txt"), str(tmp_path / "o.json")))


def test_merge_sorts_and_merges_overlaps_per_document() -> None:
    spans = [Span(doc_index=0, start_char=10, end_char=20), Span(doc_index=1, start_char=0, end_char=3),
             Span(doc_index=0, start_char=0, end_char=5), Span(doc_index=0, start_char=15, end_char=25),
             Span(doc_index=0, start_char=25, end_char=30), Span(doc_index=0, start_char=40, end_char=40)]  # fmt: skip
    assert merge_spans(spans) == [(0, 0, 5), (0, 10, 30), (1, 0, 3)]
    assert merge_spans(spans, merge_gap_chars=5) == [(0, 0, 30), (1, 0, 3)]


def test_refs_carry_checksums_of_the_merged_text(tmp_path: Path) -> None:
    doc = _doc(tmp_path)
    spans = [
        Span(doc_index=0, start_char=4, end_char=9),
        Span(doc_index=0, start_char=8, end_char=15),
    ]
    (ref,) = build_citations("t1", "s1", spans, {0: doc})
    assert (ref.start_char, ref.end_char, ref.doc_id) == (4, 15, "d1")
    assert ref.checksum == checksum_text("quick brown")
    assert verify_ref(ref, doc.text) == (True, "quick brown")


def test_tampered_ref_does_not_verify(tmp_path: Path) -> None:
    doc = _doc(tmp_path)
    (ref,) = build_citations("t1", "s1", [Span(doc_index=0, start_char=45, end_char=49)], {0: doc})
    assert verify_ref(ref, doc.text)[0]
    ref.end_char = 50
    assert verify_ref(ref, doc.text)[0] is False
    ref.end_char = 10_000
    assert verify_ref(ref, doc.text) == (False, "")


def test_spans_of_unknown_documents_are_dropped(tmp_path: Path) -> None:
    refs = build_citations("t", "s", [Span(doc_index=3, start_char=0, end_char=2)], {0: _doc(tmp_path)})
    assert refs == []


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 2), st.integers(0, 200), st.integers(0, 50)), max_size=30),
    st.integers(0, 10),
)
def test_merging_covers_exactly_the_union_of_spans(raw: list[tuple[int, int, int]], gap: int) -> None:
    spans = [Span(doc_index=d, start_char=s, end_char=s + n) for d, s, n in raw]
    merged = merge_spans(spans, merge_gap_chars=gap)
    covered = {(d, c) for d, s, n in raw for c in range(s, s + n)}
    merged_chars = {(d, c) for d, s, e in merged for c in range(s, e)}
    assert covered <= merged_chars
    for doc_index in {d for d, _, _ in merged}:
        ranges = [(s, e) for d, s, e in merged if d == doc_index]
        assert ranges == sorted(ranges)
        for (_, end), (start, _) in itertools.pairwise(ranges):
            assert start > end + gap  # separate ranges are further apart than the gap
        if gap == 0:  # without gap merging nothing outside the spans is cited
            assert {c for d, c in merged_chars if d == doc_index} == {c for d, c in covered if d == doc_index}
