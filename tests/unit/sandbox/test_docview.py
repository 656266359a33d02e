"""DocView reads: text, spans logged, bounds, find, regex, structure."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlm_rs.sandbox.v1.sandbox_pb2 import StepResult
from tests.unit.sandbox.conftest import CORPUS, Runner, state_of, write_docs


def spans(result: StepResult) -> list[tuple[int, int, int, str]]:
    return [(s.doc_index, s.start_char, s.end_char, s.tag) for s in result.span_log]


def test_slice_logs_span_with_tag(run: Runner) -> None:
    result = run('state["t"] = context[0].slice(7, 13, tag="context:intro")')
    assert result.success, result.error
    assert state_of(result)["t"] == CORPUS[0][7:13]
    assert spans(result) == [(0, 7, 13, "context:intro")]


def test_getitem_supports_negative_and_open_bounds(run: Runner) -> None:
    doc = CORPUS[1]
    code = (
        "d = context[1]\n"
        "state['a'] = d[-10:]\nstate['b'] = d[:5]\nstate['c'] = d[3]\nstate['n'] = len(d)\n"
        "state['e'] = d[50:20]\n"
    )
    result = run(code)
    assert result.success, result.error
    out = state_of(result)
    assert (out["a"], out["b"], out["c"], out["n"], out["e"]) == (
        doc[-10:],
        doc[:5],
        doc[3],
        len(doc),
        "",
    )
    assert spans(result) == [(1, len(doc) - 10, len(doc), ""), (1, 0, 5, ""), (1, 3, 4, "")]


def test_multibyte_text_slices_by_characters(run: Runner) -> None:
    doc = CORPUS[0]
    start = doc.index("São")
    result = run(f"state['x'] = context[0][{start}:{start + 9}]")
    assert state_of(result)["x"] == doc[start : start + 9] == "São Paulo"


def test_find_returns_hits_with_positions_and_logs_each(run: Runner) -> None:
    doc = CORPUS[0]
    result = run("state['hits'] = context[0].find('Zürich')")
    hits = state_of(result)["hits"]
    start = doc.index("Zürich")
    assert hits == [{"start_char": start, "end_char": start + 6, "text": "Zürich"}]
    assert spans(result) == [(0, start, start + 6, "")]


def test_find_respects_range_and_max_hits(run: Runner) -> None:
    result = run("state['h'] = context[1].find('a', start=10, end=60, max_hits=2)")
    hits = state_of(result)["h"]
    assert len(hits) == 2 and all(10 <= h["start_char"] < 60 for h in hits)
    expected = [i for i in range(10, 60) if CORPUS[1][i] == "a"][:2]
    assert [h["start_char"] for h in hits] == expected


def test_regex_returns_groups(run: Runner) -> None:
    result = run(r"state['m'] = context[0].regex(r'(\d+)% to \$(\d+\.\d)M')")
    (match,) = state_of(result)["m"]
    assert match["groups"] == ["12", "4.2"]
    assert CORPUS[0][match["start_char"] : match["end_char"]] == match["text"]


def test_regex_redos_is_bounded_by_its_timeout(run: Runner, tmp_path: Path) -> None:
    directory = tmp_path / "redos"
    directory.mkdir()
    docs = write_docs(directory, ["a" * 60 + "!"])
    result = run("context[0].regex(r'(a|aa)+$')", docs=docs, max_regex_seconds=0.2)
    assert not result.success
    assert result.error.code == "SANDBOX_RUNTIME_ERROR"
    assert "regex timed out" in result.error.message
    assert result.duration_ms < 10_000  # stopped by the timeout, not by luck


def test_sections_and_page_spans_come_from_meta(run: Runner) -> None:
    result = run("state['s'] = context[0].sections()\nstate['p'] = context[0].page_spans()")
    out = state_of(result)
    assert [(s["title"], s["level"]) for s in out["s"]] == [
        ("Revenue", 1),
        ("Lisbon", 2),
        ("Risks", 1),
    ]
    assert out["p"][1] == {"page_num": 2, "start_char": 111, "end_char": 160}
    # Titles are document text: each is logged where it stands; pages are positions.
    doc = CORPUS[0]
    assert spans(result) == [
        (0, doc.index(t), doc.index(t) + len(t), "") for t in ("Revenue", "Lisbon", "Risks")
    ]


def test_sections_without_titles_log_nothing(run: Runner) -> None:
    result = run("state['s'] = context[0].sections(titles=False)")
    assert [s["title"] for s in state_of(result)["s"]] == ["", "", ""]
    assert spans(result) == []


def test_a_section_title_not_in_the_text_comes_back_empty(run: Runner, tmp_path: Path) -> None:
    directory = tmp_path / "fake-title"
    directory.mkdir()
    meta = {"structure": {"children": [
        {"title": "Secret outline entry", "level": 1, "start_char": 0, "end_char": 5, "page": "x"},
    ]}}  # fmt: skip
    docs = write_docs(directory, ["Plain text without that heading."], [meta])
    result = run("state['s'] = context[0].sections()", docs=docs)
    assert state_of(result)["s"] == [{"title": "", "level": 1, "start_char": 0, "end_char": 5, "page": None}]
    assert spans(result) == []


def test_regex_groups_outside_the_match_are_logged(run: Runner) -> None:
    doc = CORPUS[0]
    ceo = doc.index("CEO")
    cases = {
        r"(?<=(The ))CEO": [(ceo - 4, ceo + 3)],  # lookbehind group before the hit
        r"CEO(?=(, Ana Souza))": [(ceo, ceo + 14)],  # lookahead group after the hit
        r"(The )\KCEO": [(ceo - 4, ceo + 3)],  # group before \K
        # the lookbehind read everything from "Revenue" to the hit
        r"(?<=(Revenue) .{10,40})CEO": [(doc.index("Revenue"), ceo + 3)],
    }
    for pattern, expected in cases.items():
        result = run(f"state['m'] = context[0].regex(r'{pattern}')")
        assert result.success, (pattern, result.error)
        (match,) = state_of(result)["m"]
        assert match["text"] == "CEO" and match["start_char"] == ceo, pattern
        assert [(s, e) for _, s, e, _ in spans(result)] == expected, pattern
        for group in match["groups"]:
            assert any(doc[s:e].find(group) >= 0 for s, e in expected), (pattern, group)


def test_document_without_meta_has_no_sections(run: Runner) -> None:
    result = run("state['s'] = context[1].sections()\nstate['p'] = context[1].page_spans()")
    assert state_of(result) == {"s": [], "p": []}


def test_context_iterates_documents(run: Runner) -> None:
    result = run("state['names'] = [d.name for d in context]\nstate['n'] = len(context)")
    assert state_of(result) == {"names": ["file0.txt", "file1.txt"], "n": 2}


def test_span_limit_ends_the_step(run: Runner) -> None:
    result = run("for i in range(10):\n    context[0][i:i+1]", max_spans_per_step=5)
    assert not result.success
    assert result.error.code == "BUDGET_EXCEEDED"


def test_catching_regex_timeouts_in_a_loop_still_hits_the_step_deadline(run: Runner, tmp_path: Path) -> None:
    directory = tmp_path / "redos-loop"
    directory.mkdir()
    docs = write_docs(directory, ["a" * 60 + "!"])
    code = "while True:\n    try:\n        context[0].regex(r'(a|aa)+$')\n    except:\n        pass"
    result = run(code, docs=docs, max_regex_seconds=0.2, max_step_seconds=0.5)
    assert result.error.code == "STEP_TIMEOUT"
    assert result.duration_ms < 5_000


def test_one_read_is_bounded(run: Runner, monkeypatch: pytest.MonkeyPatch) -> None:
    from rlm_rs.sandbox import _docview

    monkeypatch.setattr(_docview, "_MAX_READ_CHARS", 50)
    result = run("x = context[0][:50]\nprint(len(x))\ny = context[0][:]")
    assert result.error.code == "SANDBOX_RUNTIME_ERROR"
    assert "one read returns at most 50 chars" in result.error.message
    assert result.stdout == "50\n" and len(result.span_log) == 1


def test_zero_width_hits_log_the_text_they_reveal(run: Runner) -> None:
    doc = CORPUS[0]
    where = [i for i, c in enumerate(doc) if c == "A"]
    for pattern in [r"(?=A)", r"(?<=A)", r"A\K", r"(?=(?:A))", r"(?i)(?<=a)(?=n)"]:
        result = run(f"state['m'] = context[0].regex(r'{pattern}', max_hits=50)")
        assert result.success, (pattern, result.error)
        hits = state_of(result)["m"]
        assert hits and all(h["text"] == "" for h in hits), pattern
        logged = {(s, e) for _, s, e, _ in spans(result)}
        for hit in hits:  # the revealed character is inside a logged span
            revealed = hit["start_char"] if pattern.startswith("(?=") else hit["start_char"] - 1
            assert any(s <= revealed < e for s, e in logged), (pattern, hit, logged)
        if pattern in (r"(?=A)", r"A\K"):
            assert len(hits) == len(where)


def test_negative_lookarounds_count_as_reading_the_whole_range(run: Runner) -> None:
    doc = CORPUS[0]
    for pattern in [r"(?![^A])", r"Ana(?! Souza)|CEO(?!x)", r"(?<!\w)Risks"]:
        result = run(f"state['m'] = context[0].regex(r'{pattern}', start=5, end=150)")
        assert result.success, (pattern, result.error)
        assert state_of(result)["m"], pattern
        assert (0, 5, 150, "") in spans(result), pattern
    result = run("state['m'] = context[0].regex(r'Zebra(?!s)')")  # no hit: nothing read
    assert state_of(result)["m"] == [] and spans(result) == []
    assert len(doc) > 150
