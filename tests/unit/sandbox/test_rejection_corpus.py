"""Code the policy layers must refuse before anything runs (the rejection corpus).

Every case starts with statements that would print, read a span and change
state if they ran; the assertions prove none of that happened.
"""

from __future__ import annotations

import json

import pytest

from tests.unit.sandbox.conftest import Runner

PRELUDE = "print('ran')\ncontext[0][:5]\nstate['ran'] = True\n"

# (name, code after the prelude, expected layer)
CASES: list[tuple[str, str, str]] = [
    ("import", "import os", "ast_policy"),
    ("from import", "from subprocess import run", "ast_policy"),
    ("dunder import", "__import__('os')", "ast_policy"),
    ("eval", "eval('1+1')", "ast_policy"),
    ("exec", "exec('x = 1')", "ast_policy"),
    ("compile", "compile('1', 'f', 'eval')", "ast_policy"),
    ("open", "open('/etc/passwd').read()", "ast_policy"),
    ("input", "input()", "ast_policy"),
    ("globals", "globals()['state']", "ast_policy"),
    ("locals", "locals()", "ast_policy"),
    ("vars", "vars()", "ast_policy"),
    ("dir", "dir(context)", "ast_policy"),
    ("help", "help(len)", "ast_policy"),
    ("getattr", "getattr(context, 'x')", "ast_policy"),
    ("type", "type(context)", "ast_policy"),
    ("object", "object.__subclasses__()", "ast_policy"),
    ("os name", "os.system('id')", "ast_policy"),
    ("sys name", "sys.modules", "ast_policy"),
    ("socket name", "socket.socket()", "ast_policy"),
    ("dunder class", "().__class__.__bases__[0].__subclasses__()", "ast_policy"),
    ("dunder globals", "f = lambda: 0\nf.__globals__", "ast_policy"),
    ("dunder in keyword", "dict(__class__=1)", "ast_policy"),
    ("global stmt", "def f():\n    global state\n    state = 1", "ast_policy"),
    ("nonlocal stmt", "def f():\n    x = 1\n    def g():\n        nonlocal x", "ast_policy"),
    ("class def", "class A:\n    pass", "ast_policy"),
    ("async def", "async def f():\n    pass", "ast_policy"),
    ("except star", "try:\n    pass\nexcept* ValueError:\n    pass", "ast_policy"),
    ("breakpoint", "breakpoint()", "ast_policy"),
    ("memoryview", "memoryview(b'x')", "ast_policy"),
    ("BaseException name", "try:\n    pass\nexcept BaseException:\n    pass", "ast_policy"),
    ("syntax error", "def (:", "ast_policy"),
    ("underscore name", "_getattr_ = None", "restrictedpython"),
    ("underscore attribute", "context._docs", "restrictedpython"),
    ("gi_frame", "g = (x for x in [1])\ng.gi_frame", "restrictedpython"),
    ("f_back via tb", "try:\n    1/0\nexcept Exception as e:\n    e.tb_frame", "restrictedpython"),
    ("hook shadowing", "def f(_getiter_=list, /):\n    pass", "restrictedpython"),
    ("dunder argument", "f = lambda __x=1: __x", "ast_policy"),
    ("match statement", "match 1:\n    case 1:\n        pass", "restrictedpython"),
]


@pytest.mark.parametrize(("name", "code", "layer"), CASES, ids=[c[0] for c in CASES])
def test_rejected_before_anything_runs(run: Runner, name: str, code: str, layer: str) -> None:
    result = run(PRELUDE + code, state={"keep": 1})
    assert not result.success
    assert result.error.code == "SANDBOX_AST_REJECTED", (name, result.error)
    assert json.loads(result.error.details_json)["layer"] == layer, result.error
    assert result.stdout == "" and len(result.span_log) == 0 and result.instructions_executed == 0
    assert json.loads(result.state_json) == {"keep": 1}


def test_rejection_names_the_line(run: Runner) -> None:
    result = run("x = 1\ny = 2\nimport os\n")
    assert result.error.message.startswith("line 3:")
    assert json.loads(result.error.details_json)["line"] == 3


def test_corpus_is_broad() -> None:
    assert len(CASES) >= 30
