"""Canonical text for ingestion: one block of extracted text in canonical form.

Canonical text is UTF-8, NFC, `\\n` line endings, no NUL, does not start
with U+FEFF (a BOM, or one left at the start by blank lines), has no trailing
spaces, tabs or no-break spaces on any line, at most one blank line in a row
and no blank lines at either end. Every step is linear in the input length, on
any input: it must never use a regex or library call that can backtrack or
sort without bound (a run of spaces made the old trailing-space regex
quadratic, 17 minutes for 1.2 MB; a run of combining marks makes CPython's NFC
quadratic). Changing any output requires a new PARSER_VERSION.
"""

from __future__ import annotations

import re
import sys
import unicodedata

LINE_END_SPACE = " \t\u00a0"
# After Unicode's Stream-Safe Text Format (UAX #15, section 13): a run of more
# than 30 characters that decompose to non-starters gets U+034F COMBINING
# GRAPHEME JOINER (a starter: invisible, kept by NFC, it ends the run) after
# every 30th. UAX #15 counts decomposed non-starters and carries the count over
# from the character before the run; counting characters is simpler to state,
# and bounds the runs NFC sorts just as well (each decomposes to at most 2).
MAX_NON_STARTERS = 30
CGJ = "\u034f"
# Lines are tidied this many characters at a time (cut at a newline), so the
# per-line objects of a large document never exist all at once.
CHUNK_CHARS = 1 << 20


def _non_starters() -> tuple[str, str, frozenset[str]]:
    """Every character whose NFKD starts with a non-starter (canonical combining
    class > 0): 917 on Unicode 14, as regex classes for the BMP and the other
    planes, and the latter as a set. Computed once per process (about 0.16 s;
    the forkserver pays it once for all parser children)."""
    members = [
        c
        for c in map(chr, range(sys.maxunicode + 1))
        if unicodedata.combining(c)
        or (unicodedata.decomposition(c) and unicodedata.combining(unicodedata.normalize("NFKD", c)[0]))
    ]

    def ranges(chars: list[str]) -> str:
        spans: list[list[str]] = []
        for c in chars:
            if spans and ord(spans[-1][1]) == ord(c) - 1:
                spans[-1][1] = c
            else:
                spans.append([c, c])
        return "".join(re.escape(a) if a == b else f"{re.escape(a)}-{re.escape(b)}" for a, b in spans)

    astral = [c for c in members if c > "\uffff"]
    return ranges([c for c in members if c <= "\uffff"]), ranges(astral), frozenset(astral)


# sre tests a class of BMP characters against a bitmap, but characters beyond
# the BMP against a list of ranges, one by one (about 20x slower per character
# scanned): the common case scans with BMP classes only, and the full class is
# used only for a text that holds a non-starter beyond the BMP. Every pattern
# starts with a class (sre then skips non-members in a tight loop) and fails
# within 31 characters of where it starts: each position is examined at most
# 31 times, so every search is linear.
_BMP, _ASTRAL, _ASTRAL_NON_STARTERS = _non_starters()
_ANY_ASTRAL = "\U00010000-\U0010ffff"
_RUN_TAIL = f"{{{MAX_NON_STARTERS},}}"
_FIRST_CANDIDATE = re.compile(f"[{_BMP}{_ANY_ASTRAL}](?:(?<=[{_ANY_ASTRAL}])|[{_BMP}]{_RUN_TAIL})")
_ASTRAL_RUNS = re.compile(f"[{_ANY_ASTRAL}]+")
_BMP_RUN = re.compile(f"[{_BMP}][{_BMP}]{_RUN_TAIL}")
_ANY_RUN = re.compile(f"[{_BMP}{_ASTRAL}][{_BMP}{_ASTRAL}]{_RUN_TAIL}")


def _break_run(match: re.Match[str]) -> str:
    run = match.group()
    return CGJ.join(run[i : i + MAX_NON_STARTERS] for i in range(0, len(run), MAX_NON_STARTERS))


def _is_latin1(text: str) -> bool:
    """Whether every character is below U+0100. CPython stores such a str one
    byte per character and encodes it with one copy: ten times faster than the
    scan below, which then has nothing to find."""
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def stream_safe(text: str) -> str:
    """`text` with a CGJ after every 30th character of each longer run of
    non-starters (unchanged otherwise)."""
    if text.isascii() or _is_latin1(text):  # no non-starter below U+0300
        return text
    found = _FIRST_CANDIDATE.search(text)
    if found is None:
        return text
    pattern = _BMP_RUN
    for run in _ASTRAL_RUNS.finditer(text, found.start()):
        if not _ASTRAL_NON_STARTERS.isdisjoint(run.group()):
            pattern = _ANY_RUN
            break
    return pattern.sub(_break_run, text)


def _needs_line_pass(text: str) -> bool:
    """Whether a line other than the last has trailing spaces, or blank lines run."""
    return "\n\n\n" in text or " \n" in text or "\t\n" in text or "\u00a0\n" in text


def tidy_lines(text: str, chunk_chars: int = CHUNK_CHARS) -> str:
    """Trailing LINE_END_SPACE off every line, blank runs to one blank line, no
    blank line at either end. One pass of str.split/rstrip over whole lines."""
    if not _needs_line_pass(text):
        # only the ends can be off: trailing spaces on the last line, whitespace-only
        # lines after it, blank lines before the first (none has trailing spaces)
        return text.rstrip(LINE_END_SPACE + "\n").lstrip("\n")
    out: list[str] = []
    started = False  # a non-blank line has been written
    blank_pending = False  # blank line(s) seen since the last non-blank line
    position, size = 0, len(text)
    while position <= size:
        cut = text.find("\n", position + chunk_chars)
        stop = size if cut == -1 else cut
        pieces: list[str] = []
        for line in text[position:stop].split("\n"):
            line = line.rstrip(LINE_END_SPACE)
            if not line:
                blank_pending = started
                continue
            if started:
                pieces.append("\n\n" if blank_pending else "\n")
            pieces.append(line)
            started, blank_pending = True, False
        out.append("".join(pieces))
        position = stop + 1
    return "".join(out)


def canonical_block(text: str) -> str:
    """One block of extracted text in canonical form (see the module docstring)."""
    # Each pass only when it changes something: on a 50 MB document every
    # needless copy is another 50-200 MB of peak memory.
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    # NUL goes before NFC: removing it later could put a mark next to a base
    # character it composes with, and leave the text not NFC.
    if "\x00" in text:
        text = text.replace("\x00", "")
    text = stream_safe(text)
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    text = tidy_lines(text)
    # No BOM: not at the start, nor after blank lines or other BOMs there (one
    # lstrip, so a run of them is not quadratic).
    return text.lstrip("\ufeff\n") if text.startswith("\ufeff") else text


__all__ = ["canonical_block", "stream_safe", "tidy_lines"]
