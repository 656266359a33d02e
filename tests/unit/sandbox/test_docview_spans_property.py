"""Property: every piece of document text a DocView method returns to step code
lies inside the union of the spans that call logged, for random documents,
random section metadata and random calls of every method, regex patterns
with groups, lookarounds and `\\K` included."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlm_rs.canonical import build_offsets
from rlm_rs.sandbox._docview import DocView, OpenDocument
from rlm_rs.sandbox._regex_reach import instrument
from rlm_rs.sandbox._runtime import StepRuntime
from rlm_rs.textfile import TextFile

EXAMPLES = int(os.environ.get("RLM_FUZZ_EXAMPLES", "100"))
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

ALPHABET = "ab c.\nXé€😀"
TEXTS = st.text(alphabet=ALPHABET, min_size=0, max_size=120)
# Methods that return document text, and the identity/position ones that must not.
METHODS = ("getitem", "index", "slice", "find", "regex", "sections", "page_spans", "identity")


def regex_patterns() -> st.SearchStrategy[str]:
    atoms = st.sampled_from(
        ["a", "b", "c", " ", r"\.", "é", "😀", ".", r"\w", r"\s", "[ab]", "[^a]", "\n", "X", r"\b", r"\1"]
    )

    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.tuples(inner, inner).map("".join),
            st.tuples(inner, inner).map("|".join),
            inner.map(lambda p: f"({p})"),
            inner.map(lambda p: f"(?:{p})"),
            inner.map(lambda p: f"(?=({p}))"),
            inner.map(lambda p: f"(?<=({p}))"),
            inner.map(lambda p: f"(?=(?:{p}))"),
            inner.map(lambda p: f"(?<={p})"),
            inner.map(lambda p: f"(?!{p})"),
            inner.map(lambda p: f"(?<!({p}))"),
            inner.map(lambda p: f"(?P<n>{p})(?P=n)"),
            inner.map(lambda p: f"(?i:{p})"),
            inner.map(lambda p: f"({p})\\K"),
            inner.map(lambda p: f"{p}\\K"),
            st.tuples(inner, st.sampled_from(["*", "+", "?", "{0,3}", "*?"])).map("".join),
        )

    return st.recursive(atoms, extend, max_leaves=8)


def positions(limit: int = 140) -> st.SearchStrategy[int]:
    return st.integers(min_value=-limit, max_value=limit)


CALLS = st.one_of(
    st.tuples(st.just("getitem"), positions(), positions()),
    st.tuples(st.just("index"), positions()),
    st.tuples(st.just("slice"), positions(), st.one_of(st.none(), positions())),
    st.tuples(st.just("find"), st.one_of(TEXTS.filter(bool), st.integers(0, 120)), positions(), positions()),
    st.tuples(st.just("regex"), regex_patterns(), positions(), st.one_of(st.none(), positions())),
    st.tuples(st.just("sections"), st.booleans()),
    st.tuples(st.just("page_spans")),
    st.tuples(st.just("identity")),
)


@st.composite
def metas(draw: st.DrawFn, text: str) -> dict[str, Any]:
    """Sections whose titles are substrings of the text near (or far from)
    their start, or not in the text at all; pages at random positions."""

    def node(depth: int) -> dict[str, Any]:
        start = draw(st.integers(0, max(0, len(text))))
        length = draw(st.integers(0, 12))
        offset = draw(st.sampled_from([0, 0, 2, 7, 80]))
        title = text[start + offset : start + offset + length]
        if draw(st.booleans()) and draw(st.booleans()):
            title = draw(TEXTS)
        children = [node(depth + 1) for _ in range(draw(st.integers(0, 2 if depth < 2 else 0)))]
        return {"title": title, "level": depth + 1, "start_char": start,
                "end_char": start + length, "page": draw(st.one_of(st.none(), st.integers(1, 3),
                st.just("p"))), "children": children}  # fmt: skip

    pages = [
        {"page_num": i + 1, "start_char": draw(st.integers(0, 200)), "end_char": draw(st.integers(0, 200))}
        for i in range(draw(st.integers(0, 3)))
    ]
    return {"structure": {"children": [node(0) for _ in range(draw(st.integers(0, 4)))]}, "pages": pages}


@st.composite
def cases(draw: st.DrawFn) -> tuple[str, dict[str, Any], list[tuple[Any, ...]]]:
    text = draw(TEXTS)
    return text, draw(metas(text)), draw(st.lists(CALLS, min_size=1, max_size=6))


def write_document(directory: str, text: str) -> None:
    with open(os.path.join(directory, "d.txt"), "w", encoding="utf-8", newline="") as handle:
        handle.write(text)
    with open(os.path.join(directory, "d.offsets.json"), "w", encoding="utf-8") as handle:
        json.dump(build_offsets(text, "doc-0", interval=7), handle)


def open_view(directory: str, meta: dict[str, Any], runtime: StepRuntime) -> DocView:
    text_path = os.path.join(directory, "d.txt")
    offsets_path = os.path.join(directory, "d.offsets.json")
    doc = OpenDocument(0, "doc-0", "d.txt", "text/plain", TextFile.open_path(text_path, offsets_path), meta)
    return DocView(doc, runtime, max_hits=200, regex_seconds=1.0)


def call(view: DocView, text: str, spec: tuple[Any, ...]) -> Any:
    name = spec[0]
    if name == "getitem":
        return view[spec[1] : spec[2]]
    if name == "index":
        return view[spec[1]]
    if name == "slice":
        return view.slice(spec[1], spec[2], tag="t")
    if name == "find":
        needle = spec[1] if isinstance(spec[1], str) else text[spec[1] : spec[1] + 3]
        return view.find(needle or "a", start=spec[2], end=spec[3])
    if name == "regex":
        return view.regex(spec[1], start=spec[2], end=spec[3])
    if name == "sections":
        return view.sections(titles=spec[1])
    if name == "page_spans":
        return view.page_spans()
    return [view.index, len(view), repr(view)]  # identity: no document text


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def covered_somewhere(piece: str, text: str, covered: list[bool]) -> bool:
    start = text.find(piece)
    while start >= 0:
        if all(covered[start : start + len(piece)]):
            return True
        start = text.find(piece, start + 1)
    return False


@PROPERTY
@given(cases())
def test_every_returned_text_lies_within_the_logged_spans(
    case: tuple[str, dict[str, Any], list[Any]],
) -> None:
    text, meta, specs = case
    with tempfile.TemporaryDirectory() as directory:
        write_document(directory, text)
        for spec in specs:
            runtime = StepRuntime(
                max_instructions=10**7, max_seconds=30, max_stdout_chars=100, max_spans=10**6
            )
            view = open_view(directory, meta, runtime)
            try:
                result = call(view, text, spec)
            except (ValueError, TypeError, IndexError, RuntimeError):
                continue  # refused input (bad pattern, out of range, regex timeout)
            finally:
                view._doc.text.close()
            covered = [False] * len(text)
            for doc_index, start, end, _ in runtime.spans:
                assert doc_index == 0 and 0 <= start < end <= len(text), runtime.spans
                covered[start:end] = [True] * (end - start)
            if spec[0] == "identity":
                assert not runtime.spans
                continue
            if spec[0] in ("find", "regex"):
                for hit in result:  # a hit's own positions hold exactly its text, all logged
                    assert text[hit["start_char"] : hit["end_char"]] == hit["text"]
                    assert all(covered[hit["start_char"] : hit["end_char"]]), (spec, hit, runtime.spans)
            if spec[0] == "page_spans":
                assert not runtime.spans and not list(strings(result))
            for piece in strings(result):
                assert not piece or covered_somewhere(piece, text, covered), (spec, piece, runtime.spans)


@PROPERTY
@given(regex_patterns(), TEXTS)
def test_instrumenting_a_pattern_never_changes_its_hits(pattern: str, text: str) -> None:
    try:
        original = regex.compile(pattern)
    except regex.error:
        return
    reach = instrument(pattern)
    if reach is None:
        return
    rewritten = regex.compile(reach.pattern)
    try:
        before = [
            (m.span(), [m.span(g) for g in range(1, len(m.groups()) + 1)])
            for m in original.finditer(text, timeout=1.0)
        ]
    except TimeoutError:
        return
    after = [
        (m.span(), [m.span(g) for g in reach.user_groups]) for m in rewritten.finditer(text, timeout=5.0)
    ]
    assert before == after, reach
