"""No function in rlm_rs/ or gateway/ is longer than 60 lines (docs/architecture.md).

A function a reader can hold in their head: its `def` line to its last line,
docstring included, decorators not (ruff's complexity limit, 12, holds the
branching; this holds the length). Generated protobuf modules (*_pb2*) are
left out. ALLOWLIST names the functions still over the limit while their
owners split them: it must only shrink. Remove an entry when its function is
split; never add one (split the function instead).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("rlm_rs", "gateway")
MAX_LINES = 60

# (file, qualified name): each being split by the piece of work that owns its file.
ALLOWLIST: frozenset[tuple[str, str]] = frozenset()  # empty: every function is split


def function_lengths(source: str) -> Iterator[tuple[str, int, int]]:
    """(qualified name, first line, length in lines) of every function and
    method in `source`, nested ones included."""

    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, int, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                assert child.end_lineno is not None
                yield name, child.lineno, child.end_lineno - child.lineno + 1
                yield from walk(child, f"{name}.<locals>.")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, f"{prefix}{child.name}.")
            else:
                yield from walk(child, prefix)

    yield from walk(ast.parse(source), "")


def _sources() -> Iterator[tuple[str, str]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "_pb2" not in path.name:
                yield path.relative_to(ROOT).as_posix(), path.read_text(encoding="utf-8")


def test_function_lengths_counts_def_to_last_line_and_names_methods() -> None:
    source = (
        "@decorator\n"
        "def short():\n"
        "    return 1\n"
        "class Box:\n"
        "    async def method(self):\n"
        "        def inner():\n"
        "            pass\n"
        "\n"
        "        return inner\n"
    )
    assert list(function_lengths(source)) == [
        ("short", 2, 2),
        ("Box.method", 5, 5),
        ("Box.method.<locals>.inner", 6, 2),
    ]


def test_no_function_is_longer_than_60_lines() -> None:
    too_long = [
        f"{path}:{line} {name} ({length} lines)"
        for path, source in _sources()
        for name, line, length in function_lengths(source)
        if length > MAX_LINES and (path, name) not in ALLOWLIST
    ]
    assert not too_long, "split these functions (at most 60 lines each):\n" + "\n".join(too_long)
