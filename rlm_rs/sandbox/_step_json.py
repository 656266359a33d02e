"""The step's `json`: loads and dumps with size limits, nothing else.

`json.loads(text)` parses a str of at most MAX_JSON_CHARS (a C-level parse of
that size takes tens of milliseconds); nesting too deep or invalid text is a
ValueError. `json.dumps(value, indent=None, sort_keys=False,
ensure_ascii=True, separators=None)` first sizes the text (an upper bound
from a walk that ticks once per container and remembers shared objects) and
refuses (MemoryError, sandbox size limit) past MAX_JSON_CHARS before
encoding, so a shared-reference bomb (`a = [a, a]` forty times) costs forty
visits instead of 2^40 pieces. Must never expose the stdlib
`json` module (its graph reaches `codecs.open`) or a file API: the step sees
only this object, whose state is in underscore slots.
"""

from __future__ import annotations

import json as _json
from typing import Any

from rlm_rs.sandbox import _sizes
from rlm_rs.sandbox._runtime import StepRuntime

MAX_JSON_CHARS = 10_000_000
_MAX_INDENT = 16


class StepJson:
    """The `json` global of one step."""

    __slots__ = ("_rt",)

    def __init__(self, runtime: StepRuntime) -> None:
        self._rt = runtime

    def __repr__(self) -> str:
        return "<step json: bounded loads and dumps>"

    def loads(self, text: Any) -> Any:
        if type(text) is not str:
            raise TypeError(f"json.loads needs a str, not {type(text).__name__}")
        if len(text) > MAX_JSON_CHARS:
            raise ValueError(f"json.loads takes at most {MAX_JSON_CHARS:,} chars")
        self._rt.check_deadline()
        try:
            return _json.loads(text)
        except RecursionError:
            raise ValueError("json.loads: the value is nested too deeply") from None
        except ValueError as exc:  # JSONDecodeError, and ints past the digit limit
            raise ValueError(f"json.loads: {exc}") from None

    def dumps(
        self,
        value: Any,
        indent: Any = None,
        sort_keys: Any = False,
        ensure_ascii: Any = True,
        separators: Any = None,
    ) -> str:
        if indent is not None and (type(indent) is not int or not 0 <= indent <= _MAX_INDENT):
            raise ValueError(f"indent must be None or an int from 0 to {_MAX_INDENT}")
        if separators is not None and not (
            type(separators) in (tuple, list)
            and len(separators) == 2
            and all(type(s) is str and len(s) <= 8 for s in separators)
        ):
            raise ValueError("separators must be two short strs")
        if separators is None:  # the stdlib's defaults
            separators = (", ", ": ") if indent is None else (",", ": ")
        item_sep, key_sep = separators
        encoder = _json.JSONEncoder(
            indent=indent,
            sort_keys=bool(sort_keys),
            ensure_ascii=bool(ensure_ascii),
            separators=(item_sep, key_sep),
        )
        sizer = _JsonSizer(self._rt.tick, encoder, indent, len(item_sep), len(key_sep))
        try:
            size = sizer.size(value, 0)
        except RecursionError:
            raise ValueError("json.dumps: the value is nested too deeply") from None
        if size > MAX_JSON_CHARS:
            raise _sizes.too_large("the JSON text", size, MAX_JSON_CHARS, "chars")
        try:
            return encoder.encode(value)
        except RecursionError:
            raise ValueError("json.dumps: the value is nested too deeply") from None


class _JsonSizer:
    """An upper bound of a value's JSON text, ticking once per (object, depth)
    visited and remembering shared objects, so `a = [a, a]` forty times costs
    forty visits. A type json cannot encode counts 0 (encode raises TypeError)."""

    def __init__(
        self, tick: Any, encoder: _json.JSONEncoder, indent: int | None, item: int, key: int
    ) -> None:
        self.tick = tick
        self.encoder = encoder
        self.indent = indent
        self.item = item
        self.key = key
        self.memo: dict[tuple[int, int], int] = {}

    def text(self, value: str) -> int:
        if len(value) > MAX_JSON_CHARS:
            return len(value) + 2
        return len(self.encoder.encode(value))

    def scalar(self, value: Any) -> int:
        if value is None or type(value) is bool:
            return 5
        if type(value) is int:
            return len(str(value)) if value.bit_length() < 14_000 else MAX_JSON_CHARS + 1
        if type(value) is float:
            return len(repr(value)) + 8  # Infinity, NaN
        return 0

    def size(self, value: Any, depth: int) -> int:
        if type(value) is str:
            return self.text(value)
        if type(value) not in (list, tuple, dict):
            return self.scalar(value)
        key = (id(value), depth)
        known = self.memo.get(key)
        if known is not None:
            return known
        self.tick()
        # per item: its separator, and with indent a newline and the indentation
        per_item = self.item + (1 + self.indent * (depth + 1) if self.indent is not None else 0)
        total = 2 + (1 + self.indent * depth if self.indent is not None else 0)
        if type(value) is dict:
            for k, v in value.items():
                total += per_item + self.key + (self.text(k) if type(k) is str else self.scalar(k) + 2)
                total += self.size(v, depth + 1)
                if total > MAX_JSON_CHARS:
                    break
        else:
            for item in value:
                total += per_item + self.size(item, depth + 1)
                if total > MAX_JSON_CHARS:
                    break
        self.memo[key] = total
        return total
