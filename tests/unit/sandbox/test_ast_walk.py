"""The AST policy's one-list walk visits exactly what ast.walk visits, in the
same order, so the first violation reported is the same one as before."""

from __future__ import annotations

import ast

import pytest

from rlm_rs.errors import RlmError
from rlm_rs.sandbox._ast_policy import _nodes, parse_and_check
from rlm_rs.sandbox.executor import _WARM_CODE

_SOURCES = [
    _WARM_CODE,
    "def f(a, /, b=1, *c, d, **e):\n    return [x async for x in y] if a else lambda q: q\n",
    "try:\n    pass\nexcept:\n    pass\nfinally:\n    z = {k: v for k, v in w}\n",
    "match = 1\nwith a as (b, c):\n    del b[0], c.d\n",
]


@pytest.mark.parametrize("source", _SOURCES)
def test_nodes_match_ast_walk(source: str) -> None:
    tree = ast.parse(source)
    assert _nodes(tree) == list(ast.walk(tree))


def test_first_violation_in_walk_order_is_reported() -> None:
    # The import sits higher in the tree than the dunder attribute nested
    # in a function: breadth-first order reports the import.
    source = "def f():\n    return x.__class__\nimport os\n"
    with pytest.raises(RlmError) as raised:
        parse_and_check(source, 10_000)
    assert raised.value.details["line"] == 3


def test_unavailable_name_bound_after_its_read_passes_and_unbound_fails() -> None:
    parse_and_check("print(open)\nopen = 1\n", 10_000)  # bound anywhere: the step's own
    with pytest.raises(RlmError, match="'open' is not available"):
        parse_and_check("print(open)\n", 10_000)
