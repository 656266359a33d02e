r"""The `context` global: a ContextView of DocViews over mmapped canonical text.

Every call that returns document text logs the span(s) of every character of
it, because citations and the span budget are built from what the code
actually read: slices, find hits, regex hits and each regex group (groups
can lie outside the hit: inside a lookbehind or lookahead, or before `\K`),
section titles. A string that cannot be pointed at in the text (a section
title that is not in it) is not returned. Positions (start_char, end_char,
page numbers, lengths) are not text and log nothing. Views hold their
internals in underscore slots, which restricted code cannot reach; every
public result is a str, int or a list/dict of them.
"""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import regex

from rlm_rs.limits import MAX_SPAN_TAG_CHARS
from rlm_rs.sandbox._regex_reach import Instrumented, instrument
from rlm_rs.sandbox._runtime import StepRuntime
from rlm_rs.textfile import TextFile

_MAX_PATTERN_CHARS = 2_000
_MAX_TAG_CHARS = MAX_SPAN_TAG_CHARS  # rlm_rs/limits.py: the gateway advertises the same bound
# One read materialises its text as a str (up to 4 bytes a char): 10M chars
# keeps a single read far below the pool's memory limit, and a step that
# reads a whole large document gets a clear error instead of an OOM kill.
_MAX_READ_CHARS = 10_000_000
_REGEX_WINDOW_CHARS = 1_000_000
_REGEX_OVERLAP_CHARS = 20_000
# A section title is looked for this far past its heading's start_char
# (a Markdown heading's "###### " and spaces come first).
_TITLE_SEARCH_SLACK_CHARS = 64


@dataclass
class OpenDocument:
    """One document of the step: its manifest entry, text and parsed meta."""

    doc_index: int
    doc_id: str
    source_name: str
    mime_type: str
    text: TextFile
    meta: dict[str, Any]


def _as_int(value: Any, name: str) -> int:
    if type(value) is not int:
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    return value


_END = object()


def _int_or_none(value: Any) -> int | None:
    return value if type(value) is int else None


def _union(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, merged, non-empty [start, end) intervals."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(i for i in intervals if i[1] > i[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _check_tag(tag: Any) -> str | None:
    if tag is None:
        return None
    if type(tag) is not str or len(tag) > _MAX_TAG_CHARS:
        raise ValueError(f"tag must be a str of at most {_MAX_TAG_CHARS} chars")
    return tag


def _compile_regex(pattern: str) -> tuple[Any, Instrumented | None]:
    """The compiled pattern and its reach: the same pattern with its lookaround
    bodies (and, with \\K, the whole consumed match) captured, so a hit's spans
    cover what it depends on; the reach is None (and the pattern compiled as
    given) when it cannot be captured."""
    try:
        compiled = regex.compile(pattern)
    except regex.error as exc:
        raise ValueError(f"invalid regex: {exc}") from None
    reach = instrument(pattern)
    if reach is not None:
        try:
            compiled = regex.compile(reach.pattern)
        except regex.error:
            reach = None
    return compiled, reach


class DocView:
    """One document: `doc[a:b]`, slice, find, regex, sections, page_spans."""

    __slots__ = ("_doc", "_max_hits", "_regex_seconds", "_rt")

    def __init__(self, doc: OpenDocument, runtime: StepRuntime, max_hits: int, regex_seconds: float) -> None:
        self._doc = doc
        self._rt = runtime
        self._max_hits = max_hits
        self._regex_seconds = regex_seconds

    # --- identity -------------------------------------------------------------
    @property
    def index(self) -> int:
        return self._doc.doc_index

    @property
    def doc_id(self) -> str:
        return self._doc.doc_id

    @property
    def name(self) -> str:
        return self._doc.source_name

    @property
    def mime_type(self) -> str:
        return self._doc.mime_type

    def __len__(self) -> int:
        return self._doc.text.char_length

    def __repr__(self) -> str:
        return f"<doc {self._doc.doc_index} {self._doc.source_name!r} {len(self)} chars>"

    # --- reading --------------------------------------------------------------
    def _read(self, start: int, end: int, tag: str | None) -> str:
        if end - start > _MAX_READ_CHARS:
            raise ValueError(
                f"one read returns at most {_MAX_READ_CHARS:,} chars; "
                "read the document in pieces (find/regex/sections help choose them)"
            )
        self._rt.log_span(self._doc.doc_index, start, end, tag)
        return self._doc.text.slice(start, end)

    def __getitem__(self, key: Any) -> str:
        length = len(self)
        if type(key) is int:
            index = key + length if key < 0 else key
            if not 0 <= index < length:
                raise IndexError("document index out of range")
            return self._read(index, index + 1, None)
        if type(key) is slice:
            if key.step not in (None, 1):
                raise ValueError("document slices take no step")
            for part in (key.start, key.stop):
                if part is not None and type(part) is not int:
                    raise TypeError("slice bounds must be ints")
            start, stop, _ = key.indices(length)
            return self._read(start, max(start, stop), None)
        raise TypeError("documents are indexed by int or slice")

    def slice(self, start: Any, end: Any = None, tag: Any = None) -> str:
        """doc.slice(a, b, tag=None): like doc[a:b], with a tag on the span."""
        length = len(self)
        start_i = _as_int(start, "start")
        end_i = length if end is None else _as_int(end, "end")
        start_i, end_i, _ = slice(start_i, end_i).indices(length)
        return self._read(start_i, max(start_i, end_i), _check_tag(tag))

    def _bounds(self, start: Any, end: Any) -> tuple[int, int]:
        length = len(self)
        start_i = _as_int(start, "start")
        end_i = length if end is None else _as_int(end, "end")
        start_i, end_i, _ = slice(start_i, end_i).indices(length)
        return start_i, max(start_i, end_i)

    def _hits_limit(self, max_hits: Any) -> int:
        value = _as_int(max_hits, "max_hits")
        if not 1 <= value <= self._max_hits:
            raise ValueError(f"max_hits must be between 1 and {self._max_hits}")
        return value

    def find(
        self, substr: Any, *, start: Any = 0, end: Any = None, max_hits: Any = 20
    ) -> list[dict[str, Any]]:
        """Occurrences of `substr`: [{start_char, end_char, text}], each logged."""
        if type(substr) is not str or not substr:
            raise ValueError("find needs a non-empty str")
        limit = self._hits_limit(max_hits)
        lo, hi = self._bounds(start, end)
        text = self._doc.text
        needle = unicodedata.normalize("NFC", substr).encode("utf-8")
        byte_pos, byte_end = text.byte_offset(lo), text.byte_offset(hi)
        hits: list[dict[str, Any]] = []
        while len(hits) < limit:
            self._rt.tick()
            found = text.find_bytes(needle, byte_pos, byte_end)
            if found < 0:
                break
            char_start = text.char_offset(found)
            char_end = char_start + len(needle.decode("utf-8"))
            hits.append(
                {
                    "start_char": char_start,
                    "end_char": char_end,
                    "text": self._read(char_start, char_end, None),
                }
            )
            byte_pos = found + len(needle)
        return hits

    def regex(
        self, pattern: Any, *, start: Any = 0, end: Any = None, max_hits: Any = 20
    ) -> list[dict[str, Any]]:
        """Regex matches: [{start_char, end_char, text, groups}], each logged.

        Bounded: the whole call gets max_regex_seconds (the `regex` package's
        timeout), after which RuntimeError is raised. The text is scanned in
        1M-char windows overlapping by 20k chars, so a single match longer
        than 20k chars may be missed.
        """
        if type(pattern) is not str or not pattern or len(pattern) > _MAX_PATTERN_CHARS:
            raise ValueError(f"pattern must be a non-empty str of <= {_MAX_PATTERN_CHARS} chars")
        limit = self._hits_limit(max_hits)
        lo, hi = self._bounds(start, end)
        compiled, reach = _compile_regex(pattern)
        self._rt.check_deadline()
        deadline = min(time.monotonic() + self._regex_seconds, self._rt.deadline)
        hits: list[dict[str, Any]] = []
        seen_until = lo
        window = lo
        while window < hi and len(hits) < limit:
            seen_until = self._regex_window(compiled, reach, window, hi, deadline, seen_until, hits, limit)
            window += _REGEX_WINDOW_CHARS
        if hits and reach is None:
            # What a negative lookaround (or a construct _regex_reach does not
            # know) looked at leaves no capture: the whole range searched is read.
            self._rt.log_span(self._doc.doc_index, lo, hi, None)
        return hits

    def _regex_window(
        self,
        compiled: Any,
        reach: Instrumented | None,
        window: int,
        hi: int,
        deadline: float,
        seen_until: int,
        hits: list[dict[str, Any]],
        limit: int,
    ) -> int:
        """Scan the window of the text that starts at `window` (up to `hi`),
        appending its new hits until `limit`; answers the new `seen_until`."""
        window_end = min(window + _REGEX_WINDOW_CHARS + _REGEX_OVERLAP_CHARS, hi)
        chunk = self._doc.text.slice(window, window_end)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            self._rt.check_deadline()
            raise RuntimeError(f"regex timed out after {self._regex_seconds:g} s")
        try:
            for match in compiled.finditer(chunk, timeout=remaining):
                self._rt.tick()
                match_start = window + match.start()
                if match_start < seen_until:
                    continue
                if window_end < hi and match.start() >= _REGEX_WINDOW_CHARS:
                    break
                match_end = window + match.end()
                hits.append(self._regex_hit(match, window, chunk, reach))
                seen_until = max(match_end, match_start + 1)
                if len(hits) >= limit:
                    break
        except TimeoutError:
            self._rt.check_deadline()
            raise RuntimeError(f"regex timed out after {self._regex_seconds:g} s") from None
        return seen_until

    def _regex_hit(self, match: Any, window: int, chunk: str, reach: Instrumented | None) -> dict[str, Any]:
        """One hit: its text and groups, with every character they depend on
        logged. A group may lie outside the hit (lookbehind, lookahead, before
        \\K), and so may what a positive lookaround or the text before \\K
        matched: the logged spans are the union of all of them."""
        if reach is None:
            numbers: Any = range(1, len(match.groups()) + 1)
            depends: list[tuple[int, int]] = []
        else:
            numbers = reach.user_groups
            depends = [span for name in reach.reach_groups for span in match.spans(name)]
        groups = [match.span(number) for number in numbers]
        intervals = [match.span(), *groups, *depends]
        for start, end in _union([(s, e) for s, e in intervals if s >= 0]):
            self._rt.log_span(self._doc.doc_index, window + start, window + end, None)
        return {
            "start_char": window + match.start(),
            "end_char": window + match.end(),
            "text": chunk[match.start() : match.end()],
            "groups": [None if s < 0 else chunk[s:e] for s, e in groups],
        }

    # --- structure from meta.json ----------------------------------------------
    def sections(self, titles: Any = True) -> list[dict[str, Any]]:
        """Flattened meta.structure: [{title, level, start_char, end_char, page}].

        A title is document text: each one is found in the text at its
        heading and its span logged (one span per title, so a long table of
        contents spends the span budget; `titles=False` returns positions
        only, with empty titles, and logs nothing). A title that is not in
        the text at its heading comes back empty."""
        if type(titles) is not bool:
            raise TypeError("titles must be True or False")
        out: list[dict[str, Any]] = []
        structure = self._doc.meta.get("structure") or {}
        roots = structure.get("children") if isinstance(structure, dict) else None
        stack: list[Iterator[Any]] = [iter(roots if isinstance(roots, list) else [])]
        while stack:  # depth first, in document order, without recursion
            node = next(stack[-1], _END)
            if node is _END:
                stack.pop()
                continue
            if not isinstance(node, dict):
                continue
            self._rt.tick()
            start = _int_or_none(node.get("start_char")) or 0
            out.append(
                {
                    "title": self._title(node.get("title"), start) if titles else "",
                    "level": _int_or_none(node.get("level")) or 0,
                    "start_char": start,
                    "end_char": _int_or_none(node.get("end_char")) or 0,
                    "page": _int_or_none(node.get("page")),
                }
            )
            children = node.get("children")
            if isinstance(children, list):
                stack.append(iter(children))
        return out

    def _title(self, title: Any, start: int) -> str:
        """The title as it appears in the text at its heading (span logged), or ""."""
        if type(title) is not str or not title or not 0 <= start < len(self):
            return ""
        found = self.find(title, start=start, end=start + len(title) + _TITLE_SEARCH_SLACK_CHARS, max_hits=1)
        return str(found[0]["text"]) if found else ""

    def page_spans(self) -> list[dict[str, int]]:
        """meta.pages: [{page_num, start_char, end_char}]."""
        return [
            {
                "page_num": int(p.get("page_num") or 0),
                "start_char": int(p.get("start_char") or 0),
                "end_char": int(p.get("end_char") or 0),
            }
            for p in self._doc.meta.get("pages") or []
            if isinstance(p, dict)
        ]


class ContextView:
    """The corpus: `len(context)` documents, `context[i]` a DocView."""

    __slots__ = ("_docs",)

    def __init__(self, docs: list[DocView]) -> None:
        self._docs = docs

    def __len__(self) -> int:
        return len(self._docs)

    def __getitem__(self, index: Any) -> DocView:
        if type(index) is not int:
            raise TypeError("context is indexed by int")
        return self._docs[index]

    def __iter__(self) -> Iterator[DocView]:
        return iter(self._docs)

    def __repr__(self) -> str:
        return f"<context of {len(self._docs)} documents>"
