"""References resolve: every link and file path the docs and the code name exists.

- Every relative Markdown link in README.md and docs/*.md points at a file or
  folder of the repository, and a `#anchor` at a heading of that page.
- Every repository path those pages name in text (`rlm_rs/control/budgets.py`,
  `docs/storage.md`, `deploy/ecs/`) exists; so does every such path, and every
  `docs/<page>.md#<anchor>`, named in a comment or docstring of the code.
- docs/architecture.md's map of `rlm_rs/` and `gateway/` names every module
  and package there is, and nothing that is not.
- Nobody refers to the old numbered digest ("SPEC §N", "SPEC.md"): the
  contract is docs/api.md.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
# Top-level folders of the repository: a path in text is checked only when it
# starts with one of them, so object keys (`raw/{tenant}/`, `traces/…`) and
# runtime paths (`DIR/logs/`) are never mistaken for repository files.
TOP_LEVEL = (
    "rlm_rs", "gateway", "docs", "proto", "tests", "scripts", "deploy", "docker",
    "sandbox_image", "examples", ".ci",
)  # fmt: skip
PATH_IN_TEXT = re.compile(
    r"(?<![\w./@-])((?:" + "|".join(re.escape(t) for t in TOP_LEVEL) + r")/[\w./-]*)(#[\w-]+)?"
)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
CODE_DIRS = ("rlm_rs", "gateway", "proto", "scripts", "tests")
CODE_SUFFIXES = {".py", ".proto", ".sh", ".html"}
# Generated code (protoc output) is not ours to fix.
GENERATED = re.compile(r"_pb2(_grpc)?\.pyi?$")
# The retired digest: "SPEC §10", "SPEC.md §6", "SPEC v1.3 §13", "SPEC.md".
OLD_DIGEST = re.compile(r"\bSPEC(?:\.md)?(?: v1\.3)?\s*§|\bSPEC\.md\b")
TEXT_SUFFIXES = {".py", ".pyi", ".md", ".proto", ".json", ".yaml", ".yml", ".toml", ".sh", ".html", ".txt", ""}  # fmt: skip
SKIP_DIRS = {".git", ".venv", "node_modules", "__pycache__", ".rlm", ".mypy_cache", ".ruff_cache", ".pytest_cache"}  # fmt: skip


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _prose_lines(text: str) -> list[str]:
    """The page's lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out: set[str] = set()
    for line in _prose_lines(page.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def _check_target(source: Path, target: Path, anchor: str, what: str) -> list[str]:
    if not target.exists():
        return [f"{_rel(source)}: {what} -> missing"]
    if anchor and target.suffix == ".md" and anchor not in anchors(target):
        return [f"{_rel(source)}: {what} -> no heading #{anchor} in {_rel(target)}"]
    return []


def _paths_in(text: str) -> list[tuple[str, str]]:
    """(path, anchor) for every repository path named in `text`; a pattern
    (`docker/Dockerfile.*`, `rlm_rs/bench/<name>.py`, an f-string) is not one."""
    found = []
    for match in PATH_IN_TEXT.finditer(text):
        if text[match.end() : match.end() + 1] in ("*", "<", "{", "$"):
            continue
        path = match.group(1).rstrip(".")
        found.append((path, (match.group(2) or "")[1:]))
    return found


def _code_files() -> list[Path]:
    files = []
    for folder in CODE_DIRS:
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix in CODE_SUFFIXES and path.is_file() and not GENERATED.search(path.name):
                files.append(path)
    return files


def _text_files() -> list[Path]:
    files = []
    for path in sorted(ROOT.rglob("*")):
        parts = set(path.relative_to(ROOT).parts)
        if parts & SKIP_DIRS or not path.is_file() or path.suffix not in TEXT_SUFFIXES:
            continue
        if path.name in ("uv.lock",) or GENERATED.search(path.name) or path == Path(__file__).resolve():
            continue
        files.append(path)
    return files


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_markdown_links_resolve(page: Path) -> None:
    problems = []
    for line in _prose_lines(page.read_text(encoding="utf-8")):
        for target in LINK.findall(line):
            if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            problems += _check_target(page, resolved, anchor, f"link ({target})")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_paths_named_in_docs_exist(page: Path) -> None:
    problems = []
    for line in _prose_lines(page.read_text(encoding="utf-8")):
        for path, anchor in _paths_in(line):
            problems += _check_target(page, ROOT / path, anchor, path)
    assert not problems, "\n".join(problems)


def test_paths_named_in_code_exist() -> None:
    problems = []
    for source in _code_files():
        for path, anchor in _paths_in(source.read_text(encoding="utf-8")):
            if source.suffix == ".proto" and (ROOT / "proto" / path).exists():
                continue  # an import path, relative to proto/
            problems += _check_target(source, ROOT / path, anchor, path)
    assert not problems, "\n".join(problems)


def test_no_reference_to_the_old_digest() -> None:
    hits = []
    for path in _text_files():
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if OLD_DIGEST.search(line):
                hits.append(f"{_rel(path)}:{number}: {line.strip()[:100]}")
    assert not hits, "refer to docs/api.md instead:\n" + "\n".join(hits)


def _mapped(section: str) -> set[str]:
    """The paths the architecture map's table under the `<section>` heading names,
    relative to that folder. A cell lists backticked names: the first may carry
    a folder (`sandbox/pool/_rlimits.py`), later bare names share it."""
    lines = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8").splitlines()
    start = lines.index(f"### `{section}`")
    names: set[str] = set()
    for line in lines[start + 1 :]:
        if line.startswith("#"):
            break
        if not line.startswith("| `"):
            continue
        cell = line.split("|")[1]
        items = re.findall(r"`([^`]+)`", cell)
        folder = items[0].rstrip("/").rpartition("/")[0] if items else ""
        for item in items:
            names.add(item if "/" in item.rstrip("/") or not folder else f"{folder}/{item}")
    return names


def _tree(section: str) -> set[str]:
    """Every module and package folder under `section` (generated code aside)."""
    base = ROOT / section
    out: set[str] = set()
    for path in base.rglob("*"):
        rel = path.relative_to(base)
        if rel.parts[0] in ("v1", "__pycache__") or "__pycache__" in rel.parts:
            continue
        if path.is_dir() and (path / "__init__.py").exists():
            out.add(f"{rel}/")
        elif path.name != "__init__.py" and (path.suffix == ".py" or path.name == "viewer.html"):
            out.add(str(rel))
    return out


@pytest.mark.parametrize("section", ["rlm_rs/", "gateway/"])
def test_architecture_map_matches_the_tree(section: str) -> None:
    mapped = _mapped(section)
    missing = sorted(_tree(section) - mapped)
    assert not missing, f"docs/architecture.md does not map these {section} modules: {missing}"
    stale = sorted(name for name in mapped if not (ROOT / section / name).exists())
    assert not stale, f"docs/architecture.md maps {section} paths that do not exist: {stale}"


def test_slug_matches_github() -> None:
    assert slug("Known deviations from spec v1.3") == "known-deviations-from-spec-v13"
    assert slug("Every call (`rlm_rs/control/_rpc.py`)") == "every-call-rlm_rscontrol_rpcpy"
    assert slug("Tool requests and results") == "tool-requests-and-results"
