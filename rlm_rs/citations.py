"""Citations: span logs -> merged, checksummed SpanRefs (docs/api.md#citations).

Per document: sort spans by start, merge overlapping (and touching) spans,
optionally merge gaps of at most `merge_gap_chars`, then recompute each merged
span's checksum over the canonical text. Verification re-reads the span and
recomputes; any difference makes the citation invalid. Never trust a checksum
that was not recomputed from the canonical text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from rlm_rs.canonical import checksum_text
from rlm_rs.textfile import TextFile
from rlm_rs.v1.common_pb2 import Span, SpanRef


@dataclass(frozen=True)
class CitedDocument:
    """What a citation needs to know about one document of a session."""

    doc_id: str
    text: TextFile


def merge_spans(spans: Iterable[Span], merge_gap_chars: int = 0) -> list[tuple[int, int, int]]:
    """(doc_index, start_char, end_char) ranges, merged per document, sorted."""
    by_doc: dict[int, list[tuple[int, int]]] = {}
    for span in spans:
        if span.end_char > span.start_char:
            by_doc.setdefault(span.doc_index, []).append((span.start_char, span.end_char))
    merged: list[tuple[int, int, int]] = []
    for doc_index in sorted(by_doc):
        ranges = sorted(by_doc[doc_index])
        current_start, current_end = ranges[0]
        for start, end in ranges[1:]:
            if start <= current_end + merge_gap_chars:
                current_end = max(current_end, end)
            else:
                merged.append((doc_index, current_start, current_end))
                current_start, current_end = start, end
        merged.append((doc_index, current_start, current_end))
    return merged


def make_ref(
    tenant_id: str, session_id: str, doc_index: int, doc: CitedDocument, start: int, end: int
) -> SpanRef:
    """A SpanRef for doc.text[start:end], its checksum computed from the text."""
    return SpanRef(
        tenant_id=tenant_id,
        session_id=session_id,
        doc_id=doc.doc_id,
        doc_index=doc_index,
        start_char=start,
        end_char=end,
        checksum=checksum_text(doc.text.slice(start, end)),
    )


def build_citations(
    tenant_id: str,
    session_id: str,
    spans: Iterable[Span],
    documents: Mapping[int, CitedDocument],
    merge_gap_chars: int = 0,
) -> list[SpanRef]:
    """Merged SpanRefs for a span log; spans of unknown documents are dropped."""
    refs = []
    for doc_index, start, end in merge_spans(spans, merge_gap_chars):
        doc = documents.get(doc_index)
        if doc is None:
            continue
        end = min(end, doc.text.char_length)
        if start < end:
            refs.append(make_ref(tenant_id, session_id, doc_index, doc, start, end))
    return refs


def verify_ref(ref: SpanRef, text: TextFile) -> tuple[bool, str]:
    """(valid, current text of the span): valid when the range is inside the
    document and the recomputed checksum equals the ref's."""
    if not 0 <= ref.start_char <= ref.end_char <= text.char_length:
        return False, ""
    current = text.slice(ref.start_char, ref.end_char)
    return checksum_text(current) == ref.checksum, current
