"""The step's `re` and `json`: the common API, with the stdlib's answers."""

from __future__ import annotations

import json
import re

import pytest

from tests.unit.sandbox.conftest import Runner

CASES = [
    (r"\w+", "a bb  ccc"),
    (r"(\d+)-(\d+)?", "1-2 3- 45-6"),
    (r"(?P<k>\w+)=(?P<v>[^;]*)", "a=1;b=;c=3"),
    (r"", "abc"),
    (r"x*", "axxb"),
    (r"(,)|;", "a,b;c"),
]


@pytest.mark.parametrize(("pattern", "text"), CASES)
def test_the_module_functions_answer_like_the_stdlib(run: Runner, pattern: str, text: str) -> None:
    code = (
        f"p, t = {pattern!r}, {text!r}\n"
        "m = re.search(p, t)\n"
        "out = {'findall': re.findall(p, t), 'split': re.split(p, t), 'sub': re.sub(p, '<\\\\g<0>>', t),\n"
        "       'subn': list(re.subn(p, '#', t, 2)), 'search': m.group(0) if m else None,\n"
        "       'spans': [list(x.span()) for x in re.finditer(p, t)],\n"
        "       'fn': re.sub(p, lambda x: x.group(0).upper(), t), 'match': bool(re.match(p, t)),\n"
        "       'full': bool(re.fullmatch(p, t))}\n"
        "print(json.dumps(out))"
    )
    result = run(code)
    assert result.success, result.error
    m = re.search(pattern, text)
    expected = {
        "findall": [list(x) if isinstance(x, tuple) else x for x in re.findall(pattern, text)],
        "split": re.split(pattern, text),
        "sub": re.sub(pattern, "<\\g<0>>", text),
        "subn": list(re.subn(pattern, "#", text, count=2)),
        "search": m.group(0) if m else None,
        "spans": [list(x.span()) for x in re.finditer(pattern, text)],
        "fn": re.sub(pattern, lambda x: x.group(0).upper(), text),
        "match": bool(re.match(pattern, text)),
        "full": bool(re.fullmatch(pattern, text)),
    }
    assert json.loads(result.stdout) == expected


def test_compiled_patterns_matches_and_flags(run: Runner) -> None:
    code = (
        "p = re.compile(r'id=(?P<n>\\d+)', re.IGNORECASE | re.M)\n"
        "m = p.search('x ID=42 y')\n"
        "print(m.group(1), m['n'], m.groups(), m.groupdict(), m.start(), m.end(), m.span(1), m.lastindex)\n"
        "print([x.group('n') for x in p.finditer('id=1 ID=2')], p.findall('id=7'), p.sub('#', 'id=1 b'))\n"
        "print(p.pattern, p.groups, p.groupindex, re.escape('a.b*c'), m.expand(r'<\\1>'))"
    )
    result = run(code)
    assert result.success, result.error
    assert result.stdout.split("\n")[:3] == [
        "42 42 ('42',) {'n': '42'} 2 7 (5, 7) 1",
        "['1', '2'] ['7'] # b",
        "id=(?P<n>\\d+) 1 {'n': 1} a\\.b\\*c <42>",
    ]


def test_json_loads_and_dumps(run: Runner) -> None:
    code = (
        'value = json.loads(\'{"b": [1, 2.5, null, true], "a": "\\\\u00e9"}\')\n'
        "print(value)\n"
        "print(json.dumps(value, sort_keys=True))\n"
        "print(json.dumps([1, {'k': 'é'}], indent=2, ensure_ascii=False))\n"
        "print(json.dumps({'a': 1}, separators=(',', ':')))"
    )
    result = run(code)
    assert result.success, result.error
    assert result.stdout == (
        "{'b': [1, 2.5, None, True], 'a': 'é'}\n"
        '{"a": "\\u00e9", "b": [1, 2.5, null, true]}\n'
        + json.dumps([1, {"k": "é"}], indent=2, ensure_ascii=False)
        + '\n{"a":1}\n'
    )


@pytest.mark.parametrize(
    ("code", "fragment"),
    [
        ("re.search('(', 'x')", "ValueError: invalid regex"),
        ("re.search('a', b'a')", "TypeError: string must be a str"),
        ("re.search('a' * 3000, 'a')", "ValueError: a pattern is at most 2000 chars"),
        ("re.compile('a', 1 << 20)", "ValueError: flags must be"),
        ("json.loads('{bad')", "ValueError: json.loads:"),
        ("json.dumps({1, 2})", "TypeError: Object of type set is not JSON serializable"),
        ("json.dumps([1], indent=10**6)", "ValueError: indent must be"),
    ],
)
def test_bad_arguments_are_ordinary_exceptions(run: Runner, code: str, fragment: str) -> None:
    result = run(code)
    assert result.error.code == "SANDBOX_RUNTIME_ERROR"
    assert fragment in result.error.message, result.error.message
