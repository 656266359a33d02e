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
    out: list[str] = []
    # Per open paren: "group" (capturing), "plain" (non-capturing), "reach" (instrumented lookaround).
    stack: list[str] = []
    user_groups: list[int] = []
    reach_groups: list[str] = []
    names: set[str] = set()
    refs: list[tuple[int, int]] = []  # (index in out, referenced user group)
    keep = False
    number = 0  # capturing groups opened so far in the rewritten pattern
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char == "\\":
            if i + 1 >= n:
                raise _Unsupported
            nxt = pattern[i + 1]
            if nxt == "K":
                keep = True
                out.append("\\K")
                i += 2
            elif nxt.isdigit():
                if nxt == "0":
                    raise _Unsupported  # octal escapes: leave them to the fallback
                j = i + 1
                while j < n and j < i + 3 and pattern[j].isdigit():
                    j += 1
                refs.append((len(out), int(pattern[i + 1 : j])))
                out.append("")
                i = j
            elif nxt == "g":
                close = pattern.find(">", i)
                if i + 2 >= n or pattern[i + 2] != "<" or close < 0:
                    raise _Unsupported
                target = pattern[i + 3 : close]
                if target.isdigit():
                    refs.append((len(out), int(target)))
                    out.append("")
                elif target.isidentifier():
                    out.append(pattern[i : close + 1])
                else:
                    raise _Unsupported
                i = close + 1
            else:
                out.append(pattern[i : i + 2])
                i += 2
        elif char == "[":
            j = _class_end(pattern, i)
            out.append(pattern[i:j])
            i = j
        elif char == "(":
            i, kind, text = _open(pattern, i)
            if kind == "group":
                number += 1
                user_groups.append(number)
            elif kind == "named":
                name = text[text.index("<") + 1 : -1]
                if name in names or name.startswith(REACH_PREFIX):
                    raise _Unsupported  # shared numbers: leave them to the fallback
                names.add(name)
                number += 1
                user_groups.append(number)
                kind = "group"
            elif kind == "reach":
                number += 1
                name = f"{REACH_PREFIX}{len(reach_groups)}"
                reach_groups.append(name)
                text += f"(?P<{name}>"
            stack.append(kind)
            out.append(text)
        elif char == ")":
            if not stack:
                raise _Unsupported
            out.append("))" if stack.pop() == "reach" else ")")
            i += 1
        else:
            out.append(char)
            i += 1
    if stack:
        raise _Unsupported
    shift = 1 if keep else 0
    mapping = [g + shift for g in user_groups]
    for index, group in refs:
        if not 1 <= group <= len(mapping):
            raise _Unsupported
        out[index] = f"\\g<{mapping[group - 1]}>"
    body = "".join(out)
    if keep:
        body = f"(?P<{_OUTER}>{body})"
        reach_groups.append(_OUTER)
    return Instrumented(body, tuple(mapping), tuple(reach_groups))


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
