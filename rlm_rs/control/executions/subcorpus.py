"""What documents an execution sees: the session's, or a child's sub-corpus.

A child (tool.queue_rlm) reads whole documents (`doc_indices`), or spans
materialised as derived documents (`spans`), or, when both are empty, every
document. Its documents are numbered from 0 in its own context; its `corpus`
record maps each one back to (parent doc_index, start_char, end_char), so its
span log turns into SpanRefs into the *session's* documents and its
citations verify with the same GetSpan/VerifyCitation as any other. Derived
documents live under the document cache (the pool opens only files below
RLM_SANDBOX_DOCUMENT_ROOT); nothing here reads another session's files.
"""

from __future__ import annotations

import collections
import os
import tempfile
import threading
from pathlib import Path

from rlm_rs.canonical import build_offsets, canonical_json
from rlm_rs.control.corpus import DocumentCache
from rlm_rs.domain import ExecutionRecord, Piece
from rlm_rs.errors import RlmError
from rlm_rs.sandbox.v1.sandbox_pb2 import ContextDocument
from rlm_rs.textfile import TextFile
from rlm_rs.v1.common_pb2 import RlmRequest, Span

MAX_SUBCORPUS_CHARS = 50_000_000


def execution_manifest(docs: DocumentCache, execution: ExecutionRecord) -> list[ContextDocument]:
    """The execution's context: the session's documents, or a child's sub-corpus."""
    manifest = docs.manifest(execution["session_id"])
    pieces = execution.get("corpus")
    if not pieces:
        return manifest
    return child_manifest(pieces, manifest, derived_dir(docs, execution))


class ManifestCache:
    """Each execution's manifest, listed once: a session's documents do not
    change once it is READY, so no step lists them again. Least recently
    used entries go past MAX_CACHED; `forget` when the execution ends."""

    MAX_CACHED = 1_024

    def __init__(self, docs: DocumentCache) -> None:
        self.docs = docs
        self._lock = threading.Lock()
        self._manifests: collections.OrderedDict[str, list[ContextDocument]] = collections.OrderedDict()

    def of(self, execution: ExecutionRecord) -> list[ContextDocument]:
        execution_id = execution["execution_id"]
        with self._lock:
            cached = self._manifests.get(execution_id)
            if cached is not None:
                self._manifests.move_to_end(execution_id)
                return cached
        manifest = execution_manifest(self.docs, execution)
        with self._lock:
            self._manifests[execution_id] = manifest
            while len(self._manifests) > self.MAX_CACHED:
                self._manifests.popitem(last=False)
        return manifest

    def forget(self, execution_id: str) -> None:
        with self._lock:
            self._manifests.pop(execution_id, None)


def derived_dir(docs: DocumentCache, execution: ExecutionRecord) -> Path:
    """A child's span documents: removed when it ends (citations map to the
    session's own documents), rewritten if a resumed child needs them again."""
    return docs.cache_dir / "derived" / execution["execution_id"]


def subcorpus(request: RlmRequest, manifest: list[ContextDocument]) -> list[Piece]:
    """The child's documents as pieces of the parent's: [{doc_index, start_char,
    end_char, whole}], validated against the manifest (RlmError otherwise)."""
    if request.doc_indices and request.spans:
        raise RlmError("VALIDATION_ERROR", "give doc_indices or spans, not both")
    pieces: list[Piece] = []
    if request.spans:
        for span in request.spans:
            doc = _doc(manifest, span.doc_index)
            if not 0 <= span.start_char < span.end_char <= doc.char_length:
                raise RlmError(
                    "VALIDATION_ERROR",
                    f"span [{span.start_char}, {span.end_char}) is outside document {span.doc_index} "
                    f"(0..{doc.char_length})",
                )
            pieces.append(
                {"doc_index": span.doc_index, "start_char": span.start_char, "end_char": span.end_char,
                 "whole": False}
            )  # fmt: skip
    else:
        indices = list(request.doc_indices) or [d.doc_index for d in manifest]
        if len(set(indices)) != len(indices):
            raise RlmError("VALIDATION_ERROR", "doc_indices has duplicates")
        for index in indices:
            doc = _doc(manifest, index)
            pieces.append({"doc_index": index, "start_char": 0, "end_char": doc.char_length, "whole": True})
    total = sum(p["end_char"] - p["start_char"] for p in pieces if not p["whole"])
    if total > MAX_SUBCORPUS_CHARS:
        raise RlmError("VALIDATION_ERROR", f"spans total {total} chars (at most {MAX_SUBCORPUS_CHARS})")
    return pieces


def _doc(manifest: list[ContextDocument], index: int) -> ContextDocument:
    if not 0 <= index < len(manifest):
        raise RlmError("VALIDATION_ERROR", f"doc_index {index} is not in the corpus (0..{len(manifest) - 1})")
    return manifest[index]


def child_manifest(
    pieces: list[Piece], manifest: list[ContextDocument], derived_dir: Path
) -> list[ContextDocument]:
    """The child's context: whole documents point at the parent's files;
    spans are written once as derived documents (text + offsets.json)."""
    out: list[ContextDocument] = []
    for position, piece in enumerate(pieces):
        parent = manifest[piece["doc_index"]]
        if piece["whole"]:
            entry = ContextDocument()
            entry.CopyFrom(parent)
            entry.doc_index = position
            out.append(entry)
            continue
        start, end = piece["start_char"], piece["end_char"]
        text_path = derived_dir / f"{position}.txt"
        offsets_path = derived_dir / f"{position}.offsets.json"
        if not offsets_path.exists():
            text = TextFile.open_path(parent.text_path, parent.offsets_path or None).slice(start, end)
            derived_dir.mkdir(parents=True, exist_ok=True)
            _write_atomic(text_path, text.encode("utf-8"))
            doc_id = f"{parent.doc_id}[{start}:{end}]"
            _write_atomic(offsets_path, canonical_json(build_offsets(text, doc_id)).encode("utf-8"))
        out.append(
            ContextDocument(
                doc_index=position,
                doc_id=f"{parent.doc_id}[{start}:{end}]",
                source_name=f"{parent.source_name} [{start}:{end}]",
                mime_type="text/plain",
                char_length=end - start,
                byte_length=text_path.stat().st_size,
                text_path=str(text_path),
                offsets_path=str(offsets_path),
            )
        )
    return out


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def to_parent(span: Span, pieces: list[Piece]) -> Span:
    """A span of the child's document -> the same text in the parent's document."""
    piece = pieces[span.doc_index]
    return Span(
        doc_index=piece["doc_index"],
        start_char=piece["start_char"] + span.start_char,
        end_char=piece["start_char"] + span.end_char,
        tag=span.tag,
    )


def compose(piece: Piece, parent_pieces: list[Piece]) -> Piece:
    """A piece of a child's document -> the same text in the session's
    document (for a grandchild, whose parent is itself a child)."""
    outer = parent_pieces[piece["doc_index"]]
    return {
        "doc_index": outer["doc_index"],
        "start_char": outer["start_char"] + piece["start_char"],
        "end_char": outer["start_char"] + piece["end_char"],
        "whole": piece["whole"] and outer["whole"],
    }
