"""Only rlm_rs/storage spells a storage key (docs/architecture.md, storage/).

Blob keys (`parsed/{tenant}/...`, `state/...`, `traces/...`, `contexts/...`,
`cache/...`, `raw/...`) are named by rlm_rs/storage/keys.py and uploads.py;
metadata keys (`SESSION#...`, `EXEC#...`, `STEP#...`, `EVENT#...`, ...) by
rlm_rs/storage/metadata.py. Any string literal or f-string outside storage
that starts with such a prefix fails here: ask storage for the key instead.
Docstrings and comments may describe the layout. Nor is an s3:// URI cut
apart by hand anywhere: `keys.key_of` (split_s3_uri) validates what it returns.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STORAGE = ROOT / "rlm_rs" / "storage"
GENERATED = ROOT / "rlm_rs" / "v1"
KEY_PREFIX = re.compile(
    r"^(?:(?:raw|parsed|state|traces|contexts|cache|search)/|(?:TENANT|SESSION|EXEC|STEP|EVENT|DOC|KEY|STATUS|TS)#)"
)


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring constants (module, class and function bodies)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def key_literals(source: str) -> Iterator[tuple[int, str]]:
    """(line, text) of every string literal or f-string part that starts like a storage key."""
    tree = ast.parse(source)
    docstrings = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if KEY_PREFIX.match(node.value):
                yield node.lineno, node.value


def uri_splits(source: str) -> Iterator[int]:
    """Lines that take an s3:// URI apart by hand (`uri.split("/", 3)`): split_s3_uri does."""
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "split"
            and [a.value for a in node.args if isinstance(a, ast.Constant)] == ["/", 3]
        ):
            yield node.lineno


def _sources() -> Iterator[Path]:
    for top in ("rlm_rs", "gateway"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if not path.is_relative_to(STORAGE) and not path.is_relative_to(GENERATED):
                yield path


def test_the_scan_sees_keys_in_literals_and_f_strings_but_not_docstrings() -> None:
    source = (
        '"""Writes parsed/{tenant}/ folders."""\n'
        'a = f"parsed/{tenant}/{session}/"\n'
        'b = ("executions", f"SESSION#{s}", "EXEC#" + e)\n'
        'c = "cache/"\n'
        'd = "parsed text"\n'
    )
    assert sorted(line for line, _ in key_literals(source)) == [2, 3, 3, 4]
    assert list(uri_splits('key = uri.split("/", 3)[3]\nname = key.split("/")[-1]\n')) == [1]


def test_no_storage_key_is_built_outside_storage() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}: {text!r}"
        for path in _sources()
        for line, text in key_literals(path.read_text(encoding="utf-8"))
    ]
    assert found == [], "ask rlm_rs/storage (keys.py, metadata.py) for these keys:\n" + "\n".join(found)


def test_no_s3_uri_is_taken_apart_by_hand() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in [*_sources(), *STORAGE.rglob("*.py")]
        for line in uri_splits(path.read_text(encoding="utf-8"))
    ]
    assert found == [], "use rlm_rs.storage.keys.key_of (split_s3_uri):\n" + "\n".join(found)
