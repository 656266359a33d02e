"""The step's `re`: the common API of Python's re over the `regex` engine, bounded.

search, match, fullmatch, findall, finditer, sub, subn, split, compile,
escape and the flags (I, M, S, X, A, U and their long names) work on str
values the step already holds (sub-call answers, text it read: reading
document text goes through `context`, which logs spans; this does not read
documents). Every call runs under a timeout (`max_regex_seconds`, capped by
the step's deadline; RuntimeError past it, which the step may catch),
iterates match by match through the step's tick (the line budget), and sizes
what it builds (findall/split items, sub's text) before it grows past the
size bounds of rlm_rs/sandbox/_sizes.py (MemoryError). Patterns are at most
2,000 chars. Invalid patterns raise ValueError (there is no `re.error`).
Must never hand the step a real module, a compiled `regex` object or a
`regex` match: only these wrappers (underscore slots, which restricted code
cannot reach), str, int, tuples, lists, dicts and None.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import regex

from rlm_rs.sandbox import _sizes
from rlm_rs.sandbox._runtime import StepRuntime

MAX_PATTERN_CHARS = 2_000
_ALLOWED_FLAGS = int(regex.I | regex.M | regex.S | regex.X | regex.A | regex.U)


def _text(value: Any, what: str) -> str:
    if type(value) is not str:
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    return value


def _flags(value: Any) -> int:
    if type(value) is not int or value & ~_ALLOWED_FLAGS:
        raise ValueError("flags must be a combination of re.I, re.M, re.S, re.X, re.A and re.U")
    return value


class StepMatch:
    """One match: group(), groups(), groupdict(), start(), end(), span(), m[g]."""

    __slots__ = ("_match",)

    def __init__(self, match: Any) -> None:
        self._match = match

    def group(self, *groups: Any) -> Any:
        return self._match.group(*groups)

    def __getitem__(self, group: Any) -> Any:
        return self._match.group(group)

    def groups(self, default: Any = None) -> tuple[Any, ...]:
        return tuple(self._match.groups(default))

    def groupdict(self, default: Any = None) -> dict[str, Any]:
        return dict(self._match.groupdict(default))

    def start(self, group: Any = 0) -> int:
        return int(self._match.start(group))

    def end(self, group: Any = 0) -> int:
        return int(self._match.end(group))

    def span(self, group: Any = 0) -> tuple[int, int]:
        start, end = self._match.span(group)
        return int(start), int(end)

    def expand(self, template: Any) -> str:
        template = _text(template, "template")
        _sizes.check_chars(_expansion_bound(self._match, template), "the expanded template")
        return str(self._match.expand(template))

    @property
    def string(self) -> str:
        return str(self._match.string)

    @property
    def lastindex(self) -> int | None:
        index = self._match.lastindex
        return None if index is None else int(index)

    @property
    def lastgroup(self) -> str | None:
        name = self._match.lastgroup
        return None if name is None else str(name)

    def __bool__(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"<re.Match object; span={self.span()}, match={self._match.group(0)[:50]!r}>"


def _expansion_bound(match: Any, template: str) -> int:
    """An upper bound of the expanded template's length: every group
    reference starts with a backslash and expands to at most the longest group."""
    longest = max((end - start for start, end in match.regs), default=0)
    return len(template) + template.count("\\") * longest


class _Matches:
    """finditer's result: yields StepMatch objects (the scan ticks per match)."""

    __slots__ = ("_it",)

    def __init__(self, it: Iterator[Any]) -> None:
        self._it = it

    def __iter__(self) -> _Matches:
        return self

    def __next__(self) -> StepMatch:
        return StepMatch(next(self._it))


class StepPattern:
    """A compiled pattern: the same methods as the module, without the pattern argument."""

    __slots__ = ("_compiled", "_re")

    def __init__(self, compiled: Any, owner: StepRe) -> None:
        self._compiled = compiled
        self._re = owner

    @property
    def pattern(self) -> str:
        return str(self._compiled.pattern)

    @property
    def flags(self) -> int:
        return int(self._compiled.flags)

    @property
    def groups(self) -> int:
        return int(self._compiled.groups)

    @property
    def groupindex(self) -> dict[str, int]:
        return dict(self._compiled.groupindex)

    def search(self, string: Any, pos: Any = 0, endpos: Any = None) -> StepMatch | None:
        return self._re._one(self._compiled.search, string, pos, endpos)

    def match(self, string: Any, pos: Any = 0, endpos: Any = None) -> StepMatch | None:
        return self._re._one(self._compiled.match, string, pos, endpos)

    def fullmatch(self, string: Any, pos: Any = 0, endpos: Any = None) -> StepMatch | None:
        return self._re._one(self._compiled.fullmatch, string, pos, endpos)

    def findall(self, string: Any, pos: Any = 0, endpos: Any = None) -> list[Any]:
        return self._re._findall(self._compiled, string, pos, endpos)

    def finditer(self, string: Any, pos: Any = 0, endpos: Any = None) -> _Matches:
        return self._re._finditer(self._compiled, string, pos, endpos)

    def sub(self, repl: Any, string: Any, count: Any = 0) -> str:
        return self._re._subn(self._compiled, repl, string, count)[0]

    def subn(self, repl: Any, string: Any, count: Any = 0) -> tuple[str, int]:
        return self._re._subn(self._compiled, repl, string, count)

    def split(self, string: Any, maxsplit: Any = 0) -> list[Any]:
        return self._re._split(self._compiled, string, maxsplit)

    def __repr__(self) -> str:
        return f"re.compile({self._compiled.pattern!r})"


class StepRe:
    """The `re` global of one step."""

    __slots__ = ("_rt", "_seconds")

    I = IGNORECASE = int(regex.I)  # noqa: E741 (re's own name)
    M = MULTILINE = int(regex.M)
    S = DOTALL = int(regex.S)
    X = VERBOSE = int(regex.X)
    A = ASCII = int(regex.A)
    U = UNICODE = int(regex.U)
    NOFLAG = 0

    def __init__(self, runtime: StepRuntime, max_regex_seconds: float) -> None:
        self._rt = runtime
        self._seconds = max_regex_seconds

    def __repr__(self) -> str:
        return "<step re: the bounded regex engine>"

    # --- the module's functions ------------------------------------------------------
    def compile(self, pattern: Any, flags: Any = 0) -> StepPattern:
        if type(pattern) is StepPattern:
            return pattern
        return StepPattern(self._compile(pattern, flags), self)

    def search(self, pattern: Any, string: Any, flags: Any = 0) -> StepMatch | None:
        return self._one(self._compile(pattern, flags).search, string, 0, None)

    def match(self, pattern: Any, string: Any, flags: Any = 0) -> StepMatch | None:
        return self._one(self._compile(pattern, flags).match, string, 0, None)

    def fullmatch(self, pattern: Any, string: Any, flags: Any = 0) -> StepMatch | None:
        return self._one(self._compile(pattern, flags).fullmatch, string, 0, None)

    def findall(self, pattern: Any, string: Any, flags: Any = 0) -> list[Any]:
        return self._findall(self._compile(pattern, flags), string, 0, None)

    def finditer(self, pattern: Any, string: Any, flags: Any = 0) -> _Matches:
        return self._finditer(self._compile(pattern, flags), string, 0, None)

    def sub(self, pattern: Any, repl: Any, string: Any, count: Any = 0, flags: Any = 0) -> str:
        return self._subn(self._compile(pattern, flags), repl, string, count)[0]

    def subn(self, pattern: Any, repl: Any, string: Any, count: Any = 0, flags: Any = 0) -> tuple[str, int]:
        return self._subn(self._compile(pattern, flags), repl, string, count)

    def split(self, pattern: Any, string: Any, maxsplit: Any = 0, flags: Any = 0) -> list[Any]:
        return self._split(self._compile(pattern, flags), string, maxsplit)

    def escape(self, pattern: Any) -> str:
        text = _text(pattern, "pattern")
        _sizes.check_chars(2 * len(text), "the escaped text")
        return str(regex.escape(text, special_only=True))

    # --- the bounded machinery ---------------------------------------------------------
    def _compile(self, pattern: Any, flags: Any) -> Any:
        if type(pattern) is StepPattern:
            if flags:
                raise ValueError("cannot process flags argument with a compiled pattern")
            return pattern._compiled
        text = _text(pattern, "pattern")
        if len(text) > MAX_PATTERN_CHARS:
            raise ValueError(f"a pattern is at most {MAX_PATTERN_CHARS} chars")
        try:
            return regex.compile(text, _flags(flags))
        except regex.error as exc:
            raise ValueError(f"invalid regex: {exc}") from None

    def _timeout(self) -> float:
        self._rt.check_deadline()
        remaining = min(self._seconds, self._rt.deadline - time.monotonic())
        if remaining <= 0:
            self._rt.check_deadline()
            raise self._timed_out()
        return remaining

    def _timed_out(self) -> RuntimeError:
        self._rt.check_deadline()  # past the step's deadline: the step ends instead
        return RuntimeError(f"regex timed out after {self._seconds:g} s")

    @staticmethod
    def _bounds(string: Any, pos: Any, endpos: Any) -> tuple[str, int, int]:
        text = _text(string, "string")
        if type(pos) is not int or (endpos is not None and type(endpos) is not int):
            raise TypeError("pos and endpos must be ints")
        return text, pos, len(text) if endpos is None else endpos

    def _one(self, method: Callable[..., Any], string: Any, pos: Any, endpos: Any) -> StepMatch | None:
        text, start, end = self._bounds(string, pos, endpos)
        try:
            found = method(text, start, end, timeout=self._timeout())
        except TimeoutError:
            raise self._timed_out() from None
        return None if found is None else StepMatch(found)

    def _iterate(self, compiled: Any, text: str, pos: int, endpos: int) -> Iterator[Any]:
        """The raw matches, one tick each, under one timeout for the whole scan."""
        tick = self._rt.tick
        try:
            for found in compiled.finditer(text, pos, endpos, timeout=self._timeout()):
                tick()
                yield found
        except TimeoutError:
            raise self._timed_out() from None

    def _finditer(self, compiled: Any, string: Any, pos: Any, endpos: Any) -> _Matches:
        text, start, end = self._bounds(string, pos, endpos)
        return _Matches(self._iterate(compiled, text, start, end))

    def _findall(self, compiled: Any, string: Any, pos: Any, endpos: Any) -> list[Any]:
        text, start, end = self._bounds(string, pos, endpos)
        groups = compiled.groups
        out: list[Any] = []
        for found in self._iterate(compiled, text, start, end):
            _sizes.check_items(len(out) + 1, "the findall result")
            if groups == 0:
                out.append(found.group(0))
            elif groups == 1:
                out.append(found.group(1) or "")
            else:
                out.append(tuple(g or "" for g in found.groups()))
        return out

    def _subn(self, compiled: Any, repl: Any, string: Any, count: Any) -> tuple[str, int]:
        text = _text(string, "string")
        if type(count) is not int or count < 0:
            raise ValueError("count must be an int >= 0")
        if type(repl) is not str and not callable(repl):
            raise TypeError("repl must be a str or a function")
        pieces: list[str] = []
        size = last = done = 0
        literal = type(repl) is str and "\\" not in repl  # no group references: used as it is
        for found in self._iterate(compiled, text, 0, len(text)):
            if count and done >= count:
                break
            match = StepMatch(found)
            if literal:
                replacement = repl
            elif type(repl) is str:
                replacement = match.expand(repl)
            else:
                replacement = repl(match)
                if type(replacement) is not str:
                    raise TypeError("the replacement function must return a str")
            size += found.start() - last + len(replacement)
            _sizes.check_chars(size, "the result of sub")
            pieces += (text[last : found.start()], replacement)
            last = found.end()
            done += 1
        _sizes.check_chars(size + len(text) - last, "the result of sub")
        pieces.append(text[last:])
        return "".join(pieces), done

    def _split(self, compiled: Any, string: Any, maxsplit: Any) -> list[Any]:
        text = _text(string, "string")
        if type(maxsplit) is not int or maxsplit < 0:
            raise ValueError("maxsplit must be an int >= 0")
        out: list[Any] = []
        size = last = 0
        for done, found in enumerate(self._iterate(compiled, text, 0, len(text))):
            if maxsplit and done >= maxsplit:
                break
            groups = found.groups()
            size += found.start() - last + sum(len(g) for g in groups if g is not None)
            _sizes.check_chars(size, "the pieces of split")
            _sizes.check_items(len(out) + 1 + len(groups), "the split result")
            out.append(text[last : found.start()])
            out.extend(groups)
            last = found.end()
        out.append(text[last:])
        return out
