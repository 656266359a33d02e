r"""Which document text a regex hit depends on, so that its spans cover it.

A hit reveals more than its own text: a positive lookaround `(?=c)` or
`(?<=ab)` reveals the text it matched (a zero-width `(?=c)` hit is a 'c'),
and `x\K` reveals the `x` it consumed before the hit's start. `instrument`
rewrites a pattern so that every positive lookaround body and, when `\K` is
present, the whole consumed match become named capture groups (numbered
group references are renumbered; the user's groups map back to their own
numbers), and the DocView logs those captures' spans with the hit.

A negative lookaround reveals text too (`(?![^c])` is `(?=c)`), but what it
looked at leaves no capture, and so do lookaround conditionals and anything
this tokenizer does not know: for those `instrument` answers None and the
caller logs the whole range it searched. Word boundaries and line anchors
reveal only a character class next to a hit, like a find() that misses.
Must never change which text a pattern matches.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

REACH_PREFIX = "rlmreach"
_OUTER = f"{REACH_PREFIX}outer"
_FLAG_CHARS = set("aiLmsufbepwr0123456789-")  # inline flags that keep the syntax as is


@dataclass(frozen=True)
class Instrumented:
    """A rewritten pattern: `user_groups[k-1]` is the new number of user group k."""

    pattern: str
    user_groups: tuple[int, ...]
    reach_groups: tuple[str, ...]


class _Unsupported(Exception):
    pass


@functools.lru_cache(maxsize=256)
def instrument(pattern: str) -> Instrumented | None:
    """The instrumented pattern, or None when its reach cannot be captured
    (the caller then treats the whole searched range as read)."""
    # Leading flag groups such as "(?i)" stay in front of the outer group.
    flags = 0
    while pattern.startswith("(?", flags):
        end = flags + 2
        while end < len(pattern) and pattern[end] in _FLAG_CHARS:
            end += 1
        if end == flags + 2 or end >= len(pattern) or pattern[end] != ")":
            break
        flags = end + 1
    try:
        inner = _instrument(pattern[flags:])
    except _Unsupported:
        return None
    return Instrumented(pattern[:flags] + inner.pattern, inner.user_groups, inner.reach_groups)


def _instrument(pattern: str) -> Instrumented:
    rewriter = _Rewriter(pattern)
    i = 0
    while i < len(pattern):
        i = rewriter.step(i)
    return rewriter.finish()


class _Rewriter:
    """One left-to-right pass of `_instrument` over a pattern: each `step`
    copies (or rewrites) the token at an index and answers the next index."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.out: list[str] = []
        # Per open paren: "group" (capturing), "plain" (non-capturing), "reach" (instrumented lookaround).
        self.stack: list[str] = []
        self.user_groups: list[int] = []
        self.reach_groups: list[str] = []
        self.names: set[str] = set()
        self.refs: list[tuple[int, int]] = []  # (index in out, referenced user group)
        self.keep = False
        self.number = 0  # capturing groups opened so far in the rewritten pattern

    def step(self, i: int) -> int:
        char = self.pattern[i]
        if char == "\\":
            return self._escape(i)
        if char == "[":
            j = _class_end(self.pattern, i)
            self.out.append(self.pattern[i:j])
            return j
        if char == "(":
            return self._open(i)
        if char == ")":
            if not self.stack:
                raise _Unsupported
            self.out.append("))" if self.stack.pop() == "reach" else ")")
            return i + 1
        self.out.append(char)
        return i + 1

    def _escape(self, i: int) -> int:
        pattern = self.pattern
        if i + 1 >= len(pattern):
            raise _Unsupported
        nxt = pattern[i + 1]
        if nxt == "K":
            self.keep = True
            self.out.append("\\K")
            return i + 2
        if nxt.isdigit():
            return self._numbered_ref(i)
        if nxt == "g":
            return self._g_ref(i)
        self.out.append(pattern[i : i + 2])
        return i + 2

    def _numbered_ref(self, i: int) -> int:
        """`\\1` .. `\\99`: a reference to a user group, renumbered in `finish`."""
        pattern, n = self.pattern, len(self.pattern)
        if pattern[i + 1] == "0":
            raise _Unsupported  # octal escapes: leave them to the fallback
        j = i + 1
        while j < n and j < i + 3 and pattern[j].isdigit():
            j += 1
        self._ref(int(pattern[i + 1 : j]))
        return j

    def _g_ref(self, i: int) -> int:
        """`\\g<1>` (renumbered in `finish`) or `\\g<name>` (kept)."""
        pattern = self.pattern
        close = pattern.find(">", i)
        if i + 2 >= len(pattern) or pattern[i + 2] != "<" or close < 0:
            raise _Unsupported
        target = pattern[i + 3 : close]
        if target.isdigit():
            self._ref(int(target))
        elif target.isidentifier():
            self.out.append(pattern[i : close + 1])
        else:
            raise _Unsupported
        return close + 1

    def _ref(self, group: int) -> None:
        self.refs.append((len(self.out), group))
        self.out.append("")

    def _open(self, i: int) -> int:
        i, kind, text = _open(self.pattern, i)
        if kind == "named":
            name = text[text.index("<") + 1 : -1]
            if name in self.names or name.startswith(REACH_PREFIX):
                raise _Unsupported  # shared numbers: leave them to the fallback
            self.names.add(name)
            kind = "group"
        if kind == "group":
            self.number += 1
            self.user_groups.append(self.number)
        elif kind == "reach":
            self.number += 1
            name = f"{REACH_PREFIX}{len(self.reach_groups)}"
            self.reach_groups.append(name)
            text += f"(?P<{name}>"
        self.stack.append(kind)
        self.out.append(text)
        return i

    def finish(self) -> Instrumented:
        """The rewritten pattern, with group references renumbered."""
        if self.stack:
            raise _Unsupported
        shift = 1 if self.keep else 0
        mapping = [g + shift for g in self.user_groups]
        for index, group in self.refs:
            if not 1 <= group <= len(mapping):
                raise _Unsupported
            self.out[index] = f"\\g<{mapping[group - 1]}>"
        body = "".join(self.out)
        if self.keep:
            body = f"(?P<{_OUTER}>{body})"
            self.reach_groups.append(_OUTER)
        return Instrumented(body, tuple(mapping), tuple(self.reach_groups))


def _class_end(pattern: str, start: int) -> int:
    """Index just past the character class opening at `start`."""
    j = start + 1
    if j < len(pattern) and pattern[j] == "^":
        j += 1
    if j < len(pattern) and pattern[j] == "]":
        j += 1
    while j < len(pattern):
        char = pattern[j]
        if char == "\\":
            j += 2
            continue
        if char == "[":
            raise _Unsupported  # nested sets (V1) or POSIX classes: fallback
        if char == "]":
            return j + 1
        j += 1
    raise _Unsupported


def _open(pattern: str, i: int) -> tuple[int, str, str]:
    """(index after the opener, kind, opener text) for the paren at `i`."""
    rest = pattern[i + 1 : i + 4]
    if not rest.startswith("?"):
        if rest.startswith("*"):
            raise _Unsupported  # backtracking verbs
        return i + 1, "group", "("
    for opener in ("(?=", "(?<="):
        if pattern.startswith(opener, i):
            return i + len(opener), "reach", opener
    if pattern.startswith("(?:", i) or pattern.startswith("(?>", i):
        return i + 3, "plain", pattern[i : i + 3]
    return _open_named(pattern, i) or _open_flags(pattern, i)


def _open_named(pattern: str, i: int) -> tuple[int, str, str] | None:
    """A named group `(?P<name>` / `(?<name>` or a named back reference
    `(?P=name)` at `i`; None for any other opener."""
    if pattern.startswith("(?P<", i) or (
        pattern.startswith("(?<", i) and i + 3 < len(pattern) and pattern[i + 3] not in "=!"
    ):
        close = pattern.find(">", i)
        start = i + (4 if pattern[i + 2] == "P" else 3)
        if close < 0 or not pattern[start:close].isidentifier():
            raise _Unsupported
        return close + 1, "named", pattern[i : close + 1]
    if pattern.startswith("(?P=", i):
        close = pattern.find(")", i)
        if close < 0 or not pattern[i + 4 : close].isidentifier():
            raise _Unsupported
        # A named back reference: one token, no group of its own.
        return close, "plain_ref", pattern[i:close]
    return None


def _open_flags(pattern: str, i: int) -> tuple[int, str, str]:
    """Inline flags at `i`: `(?i)` alone or a scoped `(?i:`; anything else is unsupported."""
    j = i + 2
    while j < len(pattern) and pattern[j] in _FLAG_CHARS:
        j += 1
    if j < len(pattern) and j > i + 2 and pattern[j] in ":)":
        if pattern[j] == ")":  # (?i): flags only, no group
            return j, "plain_ref", pattern[i:j]
        return j + 1, "plain", pattern[i : j + 1]
    # Negative lookarounds, conditionals, comments, recursion, branch reset,
    # verbose or V1 flags: what they read leaves no capture.
    raise _Unsupported
