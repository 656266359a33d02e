"""Realistic model-written steps that must run unchanged (the usability corpus).

Each case is code a root model plausibly writes, plus a check of what it
leaves behind. A policy change that breaks one of these breaks real users.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from rlm_rs.sandbox.v1.sandbox_pb2 import StepResult
from tests.unit.sandbox.conftest import Runner, state_of

Check = Callable[[StepResult, dict[str, Any]], bool]

STEP_STATE = {
    "work": {"seen": [0]},
    "_tool_results": {"llm": {"sum0": {"text": "Revenue grew 12%.", "meta": {}}}, "search": {}},
    "_tool_status": {"sum0": "resolved"},
    "_budgets": {"llm_subcalls_remaining": 10, "turns_remaining": 5},
}

CASES: list[tuple[str, str, Check]] = [
    ("peek", "print(len(context))\nprint(context[0][:40])",
     lambda r, s: r.stdout.startswith("2\nAnnual report")),
    ("doc lengths", "sizes = [len(d) for d in context]\nprint(sizes)",
     lambda r, s: r.stdout.startswith("[")),
    ("loop with enumerate", "for i, doc in enumerate(context):\n    print(i, doc.name, len(doc))",
     lambda r, s: "1 file1.txt" in r.stdout),
    ("f-string formatting", "d = context[0]\nprint(f'{d.name}: {len(d):,} chars, {3.14159:.2f}')",
     lambda r, s: "3.14" in r.stdout),
    ("find and read around", "hits = context[0].find('CEO')\nfor h in hits:\n"
     "    print(context[0][max(0, h['start_char'] - 20):h['end_char'] + 30])",
     lambda r, s: "Ana Souza" in r.stdout),
    ("regex with groups", "for m in context[0].regex(r'(\\d+)%'):\n    print(m['groups'][0])",
     lambda r, s: r.stdout.strip() == "12"),
    ("case-insensitive regex", "m = context[1].regex(r'(?i)decision: (.*)')\n"
     "state['decision'] = m[0]['groups'][0]", lambda r, s: s["decision"] == "ship v2 on 1 April."),
    ("helper function", "def snippet(doc, needle, width=30):\n    hits = doc.find(needle)\n"
     "    if not hits:\n        return None\n    h = hits[0]\n"
     "    return doc[h['start_char']:h['start_char'] + width]\n"
     "state['work']['s'] = snippet(context[1], 'Action')",
     lambda r, s: s["work"]["s"].startswith("Action: Bo")),
    ("lambda and sorted key", "names = ['chen', 'Ana', 'bo']\n"
     "print(sorted(names, key=lambda n: n.lower()))",
     lambda r, s: "['Ana', 'bo', 'chen']" in r.stdout),
    ("sorted reverse by tuple", "pairs = [(len(d), d.name) for d in context]\n"
     "print(sorted(pairs, reverse=True)[0][1])", lambda r, s: r.stdout.strip() == "file0.txt"),
    ("dict comprehension", "counts = {d.name: len(d.find('a', max_hits=200)) for d in context}\n"
     "state['counts'] = counts", lambda r, s: set(s["counts"]) == {"file0.txt", "file1.txt"}),
    ("set operations", "a = set('abc')\nb = set(['b', 'c', 'd'])\nprint(sorted(a & b), sorted(a | b))",
     lambda r, s: "['b', 'c']" in r.stdout),
    ("string methods", "text = context[1][:60]\nwords = text.lower().replace('—', ' ').split()\n"
     "print(' '.join(w.strip('.,') for w in words if w.isalpha())[:40])",
     lambda r, s: r.stdout.startswith("meeting notes")),
    ("splitlines and strip", "lines = [l.strip() for l in context[1][:200].splitlines() if l.strip()]\n"
     "state['first'] = lines[0]", lambda r, s: s["first"].startswith("Meeting notes")),
    ("try/except KeyError", "try:\n    v = state['work']['missing']\nexcept KeyError:\n    v = 'default'\n"
     "print(v)", lambda r, s: r.stdout.strip() == "default"),
    ("bare except still works", "try:\n    1 / 0\nexcept:\n    print('recovered')",
     lambda r, s: r.stdout.strip() == "recovered"),
    ("raise and catch ValueError", "def check(x):\n    if x < 0:\n        raise ValueError('negative')\n"
     "    return x\ntry:\n    check(-1)\nexcept ValueError as e:\n    print('error:', e)",
     lambda r, s: "error: negative" in r.stdout),
    ("dict get and setdefault", "work = state.setdefault('work', {})\n"
     "work.setdefault('notes', []).append('read doc 0')\nprint(work.get('missing', 'n/a'))",
     lambda r, s: s["work"]["notes"] == ["read doc 0"] and "n/a" in r.stdout),
    ("list methods", "xs = [3, 1, 2]\nxs.append(5)\nxs.extend([0])\nxs.sort()\nxs.remove(5)\n"
     "state['xs'] = xs[::-1]", lambda r, s: s["xs"] == [3, 2, 1, 0]),
    ("while loop chunking", "doc = context[0]\nchunks = []\npos = 0\nwhile pos < len(doc):\n"
     "    chunks.append(doc[pos:pos + 50])\n    pos += 50\nstate['n'] = len(chunks)",
     lambda r, s: s["n"] == -(-len(r.span_log) * 50 // 50)),
    ("zip and min/max", "a = [1, 5, 3]\nb = ['x', 'y', 'z']\nbest = max(zip(a, b))\n"
     "print(best, min(a), sum(a), abs(-2), round(2.567, 1))",
     lambda r, s: "(5, 'y') 1 9 2 2.6" in r.stdout),
    ("map and filter", "nums = list(map(int, ['1', '2', '30']))\n"
     "print(list(filter(lambda n: n > 1, nums)))", lambda r, s: "[2, 30]" in r.stdout),
    ("isinstance on wrapped types", "items = [1, 'a', [2], {'k': 1}, (3,)]\n"
     "print([isinstance(i, (list, tuple)) for i in items], isinstance('a', str))",
     lambda r, s: "[False, False, True, False, True] True" in r.stdout),
    ("augmented assignment", "total = 0\nfor d in context:\n    total += len(d)\n"
     "label = 'n='\nlabel += str(total)\nstate['label'] = label",
     lambda r, s: s["label"].startswith("n=")),
    ("nested functions and closures", "def make_counter():\n    counts = {'n': 0}\n"
     "    def inc():\n        counts['n'] += 1\n        return counts['n']\n    return inc\n"
     "c = make_counter()\nc()\nc()\nstate['n'] = c()", lambda r, s: s["n"] == 3),
    ("generator function", "def pages(doc, size):\n    for start in range(0, len(doc), size):\n"
     "        yield doc[start:start + size]\nstate['p'] = len(list(pages(context[1], 40)))",
     lambda r, s: s["p"] >= 3),
    ("tuple unpacking", "first, *rest = [1, 2, 3]\n(a, b), c = (4, 5), 6\nprint(first, rest, a + b + c)",
     lambda r, s: "1 [2, 3] 15" in r.stdout),
    ("read tool results", "res = state['_tool_results']['llm'].get('sum0')\n"
     "if state['_tool_status'].get('sum0') == 'resolved':\n"
     "    state['answer_draft'] = res['text']", lambda r, s: s["answer_draft"] == "Revenue grew 12%."),
    ("budget-aware queueing", "left = state['_budgets']['llm_subcalls_remaining']\n"
     "for i, d in enumerate(context):\n    if i < left:\n"
     "        tool.queue_llm(f'sum{i + 1}', 'Summarise:\\n' + d[:200])\n"
     "tool.YIELD('summaries queued')",
     lambda r, s: [q.key for q in r.tool_requests.llm] == ["sum1", "sum2"]),
    ("bookkeeping in work", "w = state['work']\nw['seen'] = sorted(set(w.get('seen', []) + [1]))\n"
     "w['turn_note'] = 'read doc 1'", lambda r, s: s["work"]["seen"] == [0, 1]),
    ("tagged context marking", "for h in context[0].find('Lisbon'):\n"
     "    context[0].slice(h['start_char'] - 10, h['end_char'], tag='context:office')",
     lambda r, s: r.span_log[-1].tag == "context:office"),
    ("final with citation read", "h = context[1].find('ship v2')[0]\n"
     "quote = context[1][h['start_char']:h['start_char'] + 19]\n"
     "tool.FINAL(f'The team decided to {quote}.')",
     lambda r, s: r.final.answer == "The team decided to ship v2 on 1 April.."),
    ("string join and format spec", "rows = [('a', 1.5), ('bb', 22.25)]\n"
     "print('\\n'.join(f'{k:<3}|{v:>8.2f}' for k, v in rows))", lambda r, s: "bb |   22.25" in r.stdout),
    ("divmod, chr, ord, hex", "q, rem = divmod(17, 5)\nprint(q, rem, chr(65), ord('a'), hex(255))",
     lambda r, s: "3 2 A 97 0xff" in r.stdout),
    ("any/all and conditional expression", "flags = [len(d) > 10 for d in context]\n"
     "print('all' if all(flags) else 'some' if any(flags) else 'none')",
     lambda r, s: r.stdout.strip() == "all"),
    ("slicing with step on lists", "xs = list(range(10))\nprint(xs[::2], xs[-3:])",
     lambda r, s: "[0, 2, 4, 6, 8] [7, 8, 9]" in r.stdout),
    ("str.count / startswith / in", "t = context[0][:200]\nprint(t.count('the'), t.startswith('Annual'), 'CEO' in t)",
     lambda r, s: "True True" in r.stdout),
    ("copying dicts and class helpers", "d = {'a': 1}\ncopy = dict(d, b=2)\n"
     "empty = dict.fromkeys(['x', 'y'], 0)\nprint(copy, d, empty)",
     lambda r, s: "{'a': 1, 'b': 2} {'a': 1} {'x': 0, 'y': 0}" in r.stdout),
    ("printf-style and padded report lines", "rows = [('revenue', 4.2), ('growth', 12)]\n"
     "for name, value in rows:\n    print('%-8s|%6.1f' % (name, value), name.ljust(8, '.'))",
     lambda r, s: "revenue |   4.2 revenue." in r.stdout),
]  # fmt: skip


@pytest.mark.parametrize(("name", "code", "check"), CASES, ids=[c[0] for c in CASES])
def test_realistic_step_runs_unchanged(run: Runner, name: str, code: str, check: Check) -> None:
    result = run(code, state=STEP_STATE)
    assert result.success, f"{name}: {result.error.code} {result.error.message}"
    assert check(result, state_of(result)), f"{name}: stdout={result.stdout!r}"


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30
