"""Every operation that builds a value is bounded by the policy layer, method by method.

rlm_rs/sandbox/_sizes.py enumerates every public method of str, bytes, list,
tuple, dict, set, frozenset, int, float and bool (METHOD_RULES) and every
operator, conversion, display and builtin that builds a value
(OPERATION_RULES). These tests run each entry through the in-process
executor (so no OS limit can be what stops it) with the size limits scaled
down: a CHECKED entry's attack must be refused by the policy layer (its
message carries SIZE_LIMIT_MARK; an allocator MemoryError has none), a
TICKED one must end on the line budget, and every other entry's largest legal
use must stay within the limit. A method Python adds in a later version fails
the completeness test until it is classified.
"""

from __future__ import annotations

import pytest

from rlm_rs.sandbox import _sizes
from tests.unit.sandbox.conftest import Runner

CHARS, ITEMS, BITS = 2_000, 500, 2_000


@pytest.fixture(autouse=True)
def small_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_sizes, "MAX_CHARS", CHARS)
    monkeypatch.setattr(_sizes, "MAX_ITEMS", ITEMS)
    monkeypatch.setattr(_sizes, "MAX_INT_BITS", BITS)


# --- CHECKED methods: an attack whose inputs fit but whose result would not ----------------------
DAG = "a = [1]\nfor i in range(40):\n    a = [a, a]\n"
CHECKED_ATTACKS: dict[tuple[str, str], str] = {
    ("str", "capitalize"): "r = ('İ' * 1500).capitalize()",
    ("str", "casefold"): "r = ('ß' * 1500).casefold()",
    ("str", "center"): "r = 'a'.center(3000)",
    ("str", "encode"): "r = ('€' * 1000).encode()",
    ("str", "expandtabs"): "r = ('\\t' * 100).expandtabs(100)",
    ("str", "join"): "r = ('x' * 100).join(['a'] * 100)",
    ("str", "ljust"): "r = 'a'.ljust(3000)",
    ("str", "lower"): "r = ('İ' * 1500).lower()",
    ("str", "replace"): "r = ('a' * 1000).replace('a', 'aaa')",
    ("str", "rjust"): "r = 'a'.rjust(3000)",
    ("str", "rsplit"): "r = (',' * 600).rsplit(',')",
    ("str", "split"): "r = (',' * 600).split(',')",
    ("str", "splitlines"): "r = ('\\n' * 600).splitlines()",
    ("str", "swapcase"): "r = ('ß' * 1500).swapcase()",
    ("str", "title"): "r = ('ß' * 1500).title()",
    ("str", "translate"): "r = ('a' * 1000).translate({97: 'xyz'})",
    ("str", "upper"): "r = ('ß' * 1500).upper()",
    ("str", "zfill"): "r = '1'.zfill(3000)",
    ("bytes", "center"): "r = b'a'.center(3000)",
    ("bytes", "decode"): "r = (b'\\xff' * 1000).decode('utf-8', 'backslashreplace')",
    ("bytes", "expandtabs"): "r = (b'\\t' * 100).expandtabs(100)",
    ("bytes", "hex"): "r = (b'a' * 1500).hex()",
    ("bytes", "join"): "r = (b'x' * 100).join([b'a'] * 100)",
    ("bytes", "ljust"): "r = b'a'.ljust(3000)",
    ("bytes", "replace"): "r = (b'a' * 1000).replace(b'a', b'aaa')",
    ("bytes", "rjust"): "r = b'a'.rjust(3000)",
    ("bytes", "rsplit"): "r = (b',' * 600).rsplit(b',')",
    ("bytes", "split"): "r = (b',' * 600).split(b',')",
    ("bytes", "splitlines"): "r = (b'\\n' * 600).splitlines()",
    ("bytes", "zfill"): "r = b'1'.zfill(3000)",
    ("list", "extend"): "r = [0] * 400\nr.extend(r)",
    ("dict", "update"): "r = dict.fromkeys(range(400))\nr.update(dict.fromkeys(range(400, 800)))",
    ("set", "symmetric_difference"): "r = set(range(400)).symmetric_difference(set(range(400, 800)))",
    (
        "set",
        "symmetric_difference_update",
    ): "r = set(range(400))\nr.symmetric_difference_update(range(400, 800))",
    ("set", "union"): "r = set(range(400)).union(range(400, 800))",
    ("set", "update"): "r = set(range(400))\nr.update(range(400, 800))",
    ("frozenset", "symmetric_difference"): "r = frozenset(range(400)).symmetric_difference(range(400, 800))",
    ("frozenset", "union"): "r = frozenset(range(400)).union(range(400, 800))",
    ("int", "to_bytes"): "r = (1).to_bytes(3000, 'big')",
    ("bool", "to_bytes"): "r = True.to_bytes(3000, 'big')",
}

# --- every other method: its largest legal use stays within the limit ------------------------------
SAMPLES = {
    "str": "o = 'ab' * 1000\n",
    "bytes": "o = b'ab' * 1000\n",
    "list": "o = [1] * 500\n",
    "tuple": "o = (1,) * 500\n",
    "dict": "o = dict.fromkeys(range(500))\n",
    "set": "o = set(range(500))\n",
    "frozenset": "o = frozenset(range(500))\n",
    "int": "o = (1 << 1999) - 1\n",
    "bool": "o = True\n",
    "float": "o = 1.5\n",
}
CALLS = {
    "count": "('a')", "endswith": "('b')", "find": "('b')", "index": "('b')", "rfind": "('a')",
    "rindex": "('a')", "startswith": "('a')", "lstrip": "('a')", "rstrip": "('b')",
    "strip": "('a')", "partition": "('b')", "rpartition": "('a')", "removeprefix": "('a')",
    "removesuffix": "('b')", "maketrans": "('ab', 'ba')",
}  # fmt: skip
BYTES_CALLS = {
    **{name: args.replace("('", "(b'").replace(", '", ", b'") for name, args in CALLS.items()},
    "translate": "(o.maketrans(b'a', b'c'), b'b')", "fromhex": "('ff' * 1000)",
}  # fmt: skip
CONTAINER_CALLS = {
    ("list", "append"): "(2)", ("list", "count"): "(1)", ("list", "index"): "(1)",
    ("list", "insert"): "(0, 2)", ("list", "remove"): "(1)", ("tuple", "count"): "(1)",
    ("tuple", "index"): "(1)", ("dict", "fromkeys"): "(range(500))", ("dict", "get"): "(1)",
    ("dict", "pop"): "(1)", ("dict", "setdefault"): "('x')", ("set", "add"): "(1000)",
    ("set", "discard"): "(1)", ("set", "remove"): "(1)", ("set", "difference"): "(range(10))",
    ("set", "difference_update"): "(range(10))", ("set", "intersection"): "(range(10))",
    ("set", "intersection_update"): "(range(10))", ("set", "isdisjoint"): "([1])",
    ("set", "issubset"): "(range(600))", ("set", "issuperset"): "([1])",
    ("frozenset", "difference"): "(range(10))", ("frozenset", "intersection"): "(range(10))",
    ("frozenset", "isdisjoint"): "([1])", ("frozenset", "issubset"): "(range(600))",
    ("frozenset", "issuperset"): "([1])", ("int", "from_bytes"): "(b'\\xff' * 249, 'big')",
    ("bool", "from_bytes"): "(b'\\x01', 'big')", ("float", "fromhex"): "('0x1p3')",
}  # fmt: skip
ATTRIBUTES = {"denominator", "numerator", "real", "imag"}


def legal_use(kind: str, name: str) -> str:
    if kind == "bytes":
        args = BYTES_CALLS.get(name, "()")
    elif kind == "str":
        args = CALLS.get(name, "()")
    else:
        args = CONTAINER_CALLS.get((kind, name), "()")
    call = f"o.{name}" if name in ATTRIBUTES else f"o.{name}{args}"
    return SAMPLES[kind] + f"r = {call}\n"


ALL_METHODS = [
    (kind.__name__, name, rule) for kind, rules in _sizes.METHOD_RULES.items() for name, rule in rules.items()
]


def size_of(result_code: str) -> str:
    return result_code + (
        "n = o if r is None else r\n"
        "try:\n    print('len', len(n))\n"
        "except TypeError:\n    if isinstance(n, int):\n        print('bits', n.bit_length())\n"
    )


def test_every_public_method_is_classified() -> None:
    for kind, rules in _sizes.METHOD_RULES.items():
        public = {name for name in dir(kind) if not name.startswith("_")}
        assert public == set(rules), (kind.__name__, public ^ set(rules))
    checked = {
        (kind.__name__, name)
        for kind, rules in _sizes.METHOD_RULES.items()
        for name, rule in rules.items()
        if rule == _sizes.CHECKED
    }
    assert checked == set(CHECKED_ATTACKS)


def assert_refused_by_policy(run: Runner, code: str) -> None:
    result = run(code)
    assert not result.success, code
    assert result.error.code == "SANDBOX_RUNTIME_ERROR", (code, result.error)
    assert _sizes.SIZE_LIMIT_MARK in result.error.message, (code, result.error.message)


@pytest.mark.parametrize(("kind", "name", "rule"), ALL_METHODS, ids=[f"{k}.{n}" for k, n, _ in ALL_METHODS])
def test_method_is_bounded_by_the_policy_layer(run: Runner, kind: str, name: str, rule: str) -> None:
    if rule == _sizes.CHECKED:
        assert_refused_by_policy(run, CHECKED_ATTACKS[kind, name])
        return
    if rule == _sizes.REFUSED:
        result = run(f"r = 'x'.{name}")
        assert "not available" in result.error.message
        return
    result = run(size_of(legal_use(kind, name)))
    assert result.success, (kind, name, result.error)
    for line in result.stdout.splitlines():
        unit, value = line.split()
        limit = {"len": CHARS if kind in ("str", "bytes") else ITEMS, "bits": BITS}[unit]
        if rule == _sizes.ONE_ITEM:
            limit += 1
        assert int(value) <= limit, (kind, name, line)


# --- operators, conversions, displays, builtins ------------------------------------------------------
OPERATION_ATTACKS: dict[str, list[str]] = {
    "a + b (str, bytes, list, tuple)": [
        "s = 'a' * 1500\nr = s + s", "s = b'a' * 1500\nr = s + s",
        "s = [0] * 400\nr = s + s", "s = (0,) * 400\nr = s + s",
    ],
    "a * n, n * a (str, bytes, list, tuple)": ["r = 'ab' * 1500", "r = 300 * [0, 0]", "r = (0,) * 600"],
    "a % args (str, bytes printf: widths, precisions, %s/%r of any value, %(key)s)": [
        "r = '%(a)3000s' % {'a': 1}", "s = 'a' * 1500\nr = '%s%s' % (s, s)",
        "r = '%*d' % (3000, 1)", "r = b'%3000d' % 1", "r = '%(k)s' * 3 % {'k': 'a' * 1000}",
        DAG + "r = '%r' % (a,)",
    ],
    "a | b, a ^ b (dict, set, frozenset)": [
        "r = dict.fromkeys(range(400)) | dict.fromkeys(range(400, 800))",
        "r = set(range(400)) | set(range(400, 800))", "r = set(range(400)) ^ set(range(400, 800))",
    ],
    "a += b, a *= n, a %= args, a |= b, a ^= b (every in-place form)": [
        "t = (1,) * 400\nt += t", "s = 'a' * 1500\ns += s", "x = [0] * 400\nx += x",
        "x = [0] * 400\nx += range(400)", "x = [0] * 300\nx *= 2", "s = '%3000s'\ns %= 'a'",
        "d = dict.fromkeys(range(400))\nd |= dict.fromkeys(range(400, 800))",
        "s = set(range(400))\ns ^= set(range(400, 800))", "d = {}\nd['k'] = 'a' * 1500\nd['k'] += d['k']",
    ],
    "int * int, int ** int, int << int, pow(b, e)": [
        "n = 1 << 1500\nr = n * n", "r = 3 ** 5000", "n = 1 << 1500\nr = n << 1000", "r = pow(3, 5000)",
        "n = 1 << 1500\nn <<= 1000",
    ],
    "pow(b, e, m) (time: bits(e) * bits(m))": ["r = pow(3, 1 << 100000, (1 << 4000) + 1)"],
    "x[a:b] = value (list slice assignment)": ["x = [0] * 400\nx[0:0] = x", "x = [0] * 400\nx[1:1] = range(400)"],
    "f-strings (each part's format spec and text, and the joined result)": [
        "s = 'a' * 1500\nr = f'{s}{s}'", "r = f'{1:>3000}'", DAG + "r = f'{a}'", DAG + "r = f'{a!r}'",
    ],
    "str(x), repr(x), print(...), hex/bin/oct(n) (text of any value)": [
        DAG + "r = str(a)", DAG + "r = repr(a)", DAG + "print(a)",
        "n = int('f' * 3000, 16)\nr = hex(n)", "n = int('1' * 3000, 2)\nr = bin(n)",
        "d = {}\nd['k'] = d\nx = [d] * 400\nr = str([x, x, x, x, x, x])",
    ],
    "{**a, **b} (dict display)": ["a = dict.fromkeys(range(400))\nr = {**a, **dict.fromkeys(range(400, 800))}"],
    "sum(items, start) (list/tuple concatenation)": ["a = [[0] * 400] * 3\nr = sum(a, [])"],
    "dict(mapping, **kw)": ["d = dict.fromkeys(range(400))\nr = dict(d, **{str(i): 0 for i in range(400)})"],
}  # fmt: skip
TICKED_ATTACKS = {
    "[*a], (*a,), {*a}, f(*a) (unpacking)": ["r = [*range(10**12)]", "r = {*range(10**12)}"],
    "list/tuple/set/frozenset/dict(iterable), sorted, zip, map, enumerate, ...": [
        "r = list(range(10**12))",
        "r = dict.fromkeys(range(10**12))",
        "r = sorted(range(10**12))",
    ],
}
SHRINKING_OPERATIONS = {
    "a & b, a - b (set, frozenset)": "a = set(range(500))\nr = a & a\nr = a - set()\nprint(len(r))",
}
JSON_ATTACKS = {
    "state, FINAL answers, tool metadata (canonical JSON)": [
        DAG + "state['x'] = a",
        DAG + "tool.FINAL(a)",
        "state['x'] = ['a' * 1000] * 400",
        DAG + "tool.queue_llm('k', 'p', metadata=a)",
    ],
}


def test_every_operation_is_covered() -> None:
    covered = {*OPERATION_ATTACKS, *TICKED_ATTACKS, *SHRINKING_OPERATIONS, *JSON_ATTACKS}
    assert covered == set(_sizes.OPERATION_RULES)


@pytest.mark.parametrize(
    "code", [c for codes in OPERATION_ATTACKS.values() for c in codes], ids=lambda c: c.splitlines()[-1][:50]
)
def test_operation_is_refused_by_the_policy_layer(run: Runner, code: str) -> None:
    assert_refused_by_policy(run, code)


@pytest.mark.parametrize("code", [c for codes in TICKED_ATTACKS.values() for c in codes])
def test_ticked_operation_ends_on_the_line_budget(run: Runner, code: str) -> None:
    assert run(code, max_instructions=10_000).error.code == "SANDBOX_LINE_LIMIT"


def test_shrinking_operations_stay_within_their_inputs(run: Runner) -> None:
    for code in SHRINKING_OPERATIONS.values():
        result = run(code)
        assert result.success and int(result.stdout) <= ITEMS, result.error


@pytest.mark.parametrize("code", [c for codes in JSON_ATTACKS.values() for c in codes])
def test_json_outputs_are_refused_without_walking_every_reference(run: Runner, code: str) -> None:
    result = run(code, max_state_chars=100_000)
    assert result.error.code == "STATE_TOO_LARGE", result.error
    assert result.duration_ms < 2_000


def test_the_red_team_bypasses_are_refused(run: Runner) -> None:
    # As reported (at full size they only stopped at the OS memory limits), scaled down.
    for code in [
        "r = '%(a)3000s' % {'a': 1}",
        "r = ('a' * 1000).translate(['q'] * 97 + ['xyz'])",
        "r = [0] * 400\nr.extend(r)",
        "t = (1,) * 400\nt += t",
    ]:
        assert_refused_by_policy(run, code)


def test_everyday_use_is_unchanged(run: Runner) -> None:
    code = (
        "words = ['a', 'b', 'a']\nseen = {}\n"
        "for w in words:\n    seen[w] = seen.get(w, 0) + 1\n"
        "line = ', '.join(f'{w}={n}' for w, n in sorted(seen.items()))\n"
        "rows = [1, 2] + [3]\nrows[0:1] = [9, 9]\nrows += (4,)\nmerged = {**seen, 'x': 1} | {'y': 2}\n"
        "print(line, rows, len(merged), 'x' in range(5), 2.0 in range(5), '%-4s|%(k)s' % {'k': 'v'} if False else '%-4s|' % 'ab',"
        " '%(k)s' % {'k': [1]}, sum([[1], [2]], []), str([1, 'a']), repr('q'), f'{[1]!r:>5}')"
    )
    result = run(code)
    assert result.success, result.error
    assert result.stdout == "a=2, b=1 [9, 9, 2, 3, 4] 4 False True ab  | [1] [1, 2] [1, 'a'] 'q'   [1]\n"
