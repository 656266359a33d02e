"""The AST policy's one-list walk visits exactly what ast.walk visits, in the
same order, so the first violation reported is the same one as before; the
RestrictedPython post pass's shortcuts leave the tree the full walk leaves."""

from __future__ import annotations

import ast
from typing import cast

import pytest
from RestrictedPython.transformer import RestrictingNodeTransformer

from rlm_rs.errors import RlmError
from rlm_rs.sandbox import _restricted
from rlm_rs.sandbox._ast_policy import _nodes, parse_and_check
from rlm_rs.sandbox.executor import _WARM_CODE
from tests.unit.sandbox.test_usability_corpus import CASES as USABILITY_CASES

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


class _ReferencePostPass(_restricted._PostPass):
    """The post pass as ast.NodeTransformer runs it: every node visited
    through visit_<Name> or generic_visit, leaves included."""

    visit = ast.NodeTransformer.visit

    def generic_visit(self, node: ast.AST) -> ast.AST:
        ast.NodeTransformer.generic_visit(self, node)
        for field in ("body", "orelse", "finalbody"):
            value = getattr(node, field, None)
            if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
                setattr(node, field, self._ticked(value))
        return node


def _restricted_tree(source: str) -> ast.AST:
    tree = parse_and_check(source, 100_000)
    transformer = _restricted.StepTransformer([], [], {})
    return cast(ast.AST, RestrictingNodeTransformer.visit_Module(transformer, tree))


_POST_PASS_SOURCES = [
    *_SOURCES[:1],
    *(code for _, code, _ in USABILITY_CASES),
    "f = lambda a, *b: [*b, a ** 2, f'{a!r:>{len(b)}}', {**{'k': a}, 'j': -a}]\n"
    "x = [1, 2]\nx[0:1] = [3]\nx[1] <<= 2\nwhile x:\n    x.pop()\nelse:\n    pass\n",
]


@pytest.mark.parametrize("source", _POST_PASS_SOURCES)
def test_post_pass_matches_the_node_transformer_walk(source: str) -> None:
    """The post pass skips names, constants, contexts and operators: the tree it
    leaves (ticks, size guards, positions) is the one the full walk leaves."""
    fast = _restricted._PostPass().visit(_restricted_tree(source))
    reference = _ReferencePostPass().visit(_restricted_tree(source))
    assert ast.dump(fast, include_attributes=True) == ast.dump(reference, include_attributes=True)


class _ReferenceTransformer(_restricted.StepTransformer):
    """RestrictedPython's own traversal: NodeVisitor.visit and
    NodeTransformer.generic_visit, as the library ships them."""

    visit = ast.NodeTransformer.visit
    node_contents_visit = RestrictingNodeTransformer.node_contents_visit


def _transform(cls: type[_restricted.StepTransformer], source: str) -> tuple[str, list[str], list[str]]:
    errors: list[str] = []
    warnings: list[str] = []
    tree = cls(errors, warnings, {}).visit(parse_and_check(source, 100_000))
    return ast.dump(tree, include_attributes=True), errors, warnings


_REFUSED_BY_RESTRICTEDPYTHON = [
    "match x:\n    case [1, *rest]:\n        y = rest\n",  # node types RestrictedPython does not know
    "def f():\n    yield 1\nprint = 1\n",
    "printed = 1\n_x = 2\n",
    "try:\n    pass\nexcept ValueError as _e:\n    pass\n",
    "f = lambda _a: _a\n",
    "x = [1][0:1]\nx = {1: 2}\ndel x\nassert x, 'm'\nx = 1 if x else 2\n",
]


@pytest.mark.parametrize("source", _POST_PASS_SOURCES + _REFUSED_BY_RESTRICTEDPYTHON)
def test_restricted_pass_matches_the_library_traversal(source: str) -> None:
    """The cached dispatch and the generator-free traversal leave the same tree,
    errors and warnings as RestrictedPython's own visit and generic_visit."""
    fast = _transform(_restricted.StepTransformer, source)
    assert fast == _transform(_ReferenceTransformer, source)
    if source in _REFUSED_BY_RESTRICTEDPYTHON[:5]:
        assert fast[1], "RestrictedPython should refuse this source"
