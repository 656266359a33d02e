"""Layer 2: RestrictedPython compile, its guards, and the builtins.

The AST policy has run already. RestrictedPython then rejects underscore
names, frame/code attributes and more, and routes attribute access, item
access, iteration, writes, in-place operators and print through the guards
below. After its pass, a second transformer adds what RestrictedPython has
no hook for: `_tick_()` before every statement and at the start of every
lambda body (the line budget), `_getiter_` around every `*iterable` in a
display or call (C-level unpacking would skip the tick), `_op_<name>_`
around `+`, `*`, `**`, `<<`, `%`, `|` and `^` (memory bombs like
'x' * 10**10), `_fstring_`/`_format_` for f-strings, `_setslice_` for
`x[a:b] = value` and `_dict_display_` for `{**a, **b}`.

Builtins are the spec's allowlist plus: any, all, divmod, pow (bounded),
chr, ord, hex, bin, oct, repr, callable, frozenset, slice, iter, next, and
the ordinary exception classes (so `except ValueError:` works). Iterating
builtins (sorted, zip, tuple, list, set, dict, sum, min, max, map, filter,
enumerate, reversed, any, all, frozenset, iter) iterate through the ticking
guard; `isinstance` understands the wrapped types. Never added: getattr,
type, object, vars, dir, open, eval, exec, compile, globals, locals,
breakpoint, memoryview, format, hash, id.

Size guards: every operation whose result can outgrow its inputs is sized
before it allocates (rlm_rs/sandbox/_sizes.py holds the enumeration of every
method and operator and the checks; MemoryError the step may catch).
Container methods that consume an iterable in C (extend, update, fromkeys,
union, ...) tick per element of a range or iterator argument. Class
attributes of the builtin types str/int/float/bool/list/tuple/dict/set/
frozenset are readable (dict.fromkeys, str.maketrans) except `mro`; `range`
is rlm_rs/sandbox/_range.py's (membership in O(1) for any value).
"""

from __future__ import annotations

import ast
import builtins as _py_builtins
import operator
import types
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar, TypeVar, cast

from RestrictedPython.compile import compile_restricted_exec
from RestrictedPython.Guards import guarded_iter_unpack_sequence, guarded_unpack_sequence
from RestrictedPython.transformer import RestrictingNodeTransformer

from rlm_rs.errors import RlmError
from rlm_rs.sandbox import _sizes
from rlm_rs.sandbox._range import StepRange
from rlm_rs.sandbox._runtime import StepRuntime

# Class attributes reachable on these builtin types (str.maketrans,
# int.from_bytes, float.fromhex, dict.fromkeys...); `mro` is refused because
# it hands back `object`.
_SAFE_TYPES = frozenset({str, int, float, bool, list, tuple, dict, set, frozenset})
_SAFE_TYPE_DENIED_NAMES = frozenset({"mro"})
# Class-level methods among the checked ones: bound to the type, not unbound.
_CLASS_METHODS = frozenset({"fromkeys", "maketrans", "fromhex", "from_bytes"})

_DENIED_RESULT_TYPES = (
    types.ModuleType,
    types.FrameType,
    types.CodeType,
    types.TracebackType,
    types.GeneratorType,
    types.CoroutineType,
    type,
)

_Node = TypeVar("_Node", bound=ast.AST)


def _at(new: _Node, ref: ast.AST) -> _Node:
    """`new` and the nodes inside it that have no position yet get `ref`'s
    (nodes taken from the tree keep theirs). Only the new nodes are walked:
    ast.fix_missing_locations over the whole tree took ~15% of a small step."""
    position = {
        name: getattr(ref, name, None) for name in ("lineno", "col_offset", "end_lineno", "end_col_offset")
    }
    if position["lineno"] is None:
        position = {"lineno": 1, "col_offset": 0, "end_lineno": 1, "end_col_offset": 0}
    stack: list[ast.AST] = [new]
    while stack:
        node = stack.pop()
        if "lineno" not in node._attributes or hasattr(node, "lineno"):
            if node is not new:
                continue
        for name, value in position.items():
            if not hasattr(node, name):
                setattr(node, name, value)
        stack.extend(ast.iter_child_nodes(node))
    return new


# Nodes with no child this pass could rewrite and no visit_ method of its
# own: names, constants, contexts and operators (about half of a tree).
_UNCHANGED_LEAVES: frozenset[type[ast.AST]] = frozenset(
    {ast.Name, ast.Constant, ast.Load, ast.Store, ast.Del}
    | {cls for base in (ast.operator, ast.cmpop, ast.boolop, ast.unaryop) for cls in base.__subclasses__()}
)


class _PostPass(ast.NodeTransformer):
    """Adds `_tick_()` before every statement and routes the operations that
    can build large values through the size guards (rlm_rs/sandbox/_sizes.py)."""

    _OPS: ClassVar[dict[type[ast.operator], str]] = {
        ast.Add: "_op_add_",
        ast.Mult: "_op_mul_",
        ast.Pow: "_op_pow_",
        ast.LShift: "_op_lshift_",
        ast.Mod: "_op_mod_",
        ast.BitOr: "_op_or_",
        ast.BitXor: "_op_xor_",
    }

    _TICKED_FIELDS = frozenset({"body", "orelse", "finalbody"})
    # node type -> the method that visits it (NodeVisitor.visit builds the
    # name and looks it up for every node; this pass runs on every step)
    _VISITORS: ClassVar[dict[type[ast.AST], Callable[[Any, Any], ast.AST]]] = {}

    def _ticked(self, body: list[ast.stmt]) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for stmt in body:
            tick = ast.Expr(ast.Call(ast.Name("_tick_", ast.Load()), [], []))
            out.append(_at(tick, stmt))
            out.append(stmt)
        return out

    def visit(self, node: ast.AST) -> Any:
        visitor = self._VISITORS.get(type(node))
        if visitor is None:
            name = "visit_" + type(node).__name__
            visitor = self._VISITORS[type(node)] = getattr(_PostPass, name, _PostPass.generic_visit)
        return visitor(self, node)

    def generic_visit(self, node: ast.AST) -> ast.AST:
        """NodeTransformer.generic_visit without its generators (every visitor
        here returns one node, never None or a list) and without descending
        into leaves this pass never changes, then `_tick_()` before each
        statement of a body."""
        for field in node._fields:
            value = getattr(node, field, None)
            if type(value) is list:
                for index, item in enumerate(value):
                    if isinstance(item, ast.AST) and type(item) not in _UNCHANGED_LEAVES:
                        value[index] = self.visit(item)
                if field in self._TICKED_FIELDS and value and isinstance(value[0], ast.stmt):
                    setattr(node, field, self._ticked(value))
            elif isinstance(value, ast.AST) and type(value) not in _UNCHANGED_LEAVES:
                setattr(node, field, self.visit(value))
        return node

    def visit_Starred(self, node: ast.Starred) -> ast.AST:
        """`[*it]`, `f(*it)`: unpacking iterates in C, so route it through the
        ticking iterator (assignment targets are unpacked by a guard already)."""
        self.generic_visit(node)
        if isinstance(node.ctx, ast.Load):
            call = ast.Call(ast.Name("_getiter_", ast.Load()), [node.value], [])
            node.value = _at(call, node.value)
        return node

    def visit_Lambda(self, node: ast.Lambda) -> ast.AST:
        """A lambda has no statements to tick: its body becomes
        `_tick_() or body` (the tick returns None), so recursion through
        lambdas counts too."""
        self.generic_visit(node)
        tick = ast.Call(ast.Name("_tick_", ast.Load()), [], [])
        node.body = _at(ast.BoolOp(ast.Or(), [tick, node.body]), node.body)
        return node

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        name = self._OPS.get(type(node.op))
        if name is None:
            return node
        call = ast.Call(ast.Name(name, ast.Load()), [node.left, node.right], [])
        return _at(call, node)

    def visit_JoinedStr(self, node: ast.JoinedStr) -> ast.AST:
        """`f"a{x!r:>{w}}b"` -> `_fstring_("a", _format_(x, 114, _fstring_(">", _format_(w, -1, ""))), "b")`:
        each placeholder's spec and text, and the joined result, are sized."""
        self.generic_visit(node)
        parts: list[ast.expr] = []
        for value in node.values:
            if isinstance(value, ast.FormattedValue):
                spec = value.format_spec if value.format_spec is not None else ast.Constant("")
                call = ast.Call(
                    ast.Name("_format_", ast.Load()), [value.value, ast.Constant(value.conversion), spec], []
                )
                parts.append(_at(call, value))
            else:
                parts.append(value)
        return _at(ast.Call(ast.Name("_fstring_", ast.Load()), parts, []), node)

    def visit_Dict(self, node: ast.Dict) -> ast.AST:
        """`{**a, k: v, **b}` merges in C: -> `_dict_display_(splat, a, k, v, splat, b)`
        (same evaluation order), sized before it is built."""
        self.generic_visit(node)
        if all(key is not None for key in node.keys):
            return node
        args: list[ast.expr] = []
        for key, value in zip(node.keys, node.values, strict=True):
            args += [ast.Name("_dict_splat_", ast.Load()) if key is None else key, value]
        return _at(ast.Call(ast.Name("_dict_display_", ast.Load()), args, []), node)

    def visit_Assign(self, node: ast.Assign) -> ast.AST:
        """`x[a:b] = value` grows a list in C: -> `_setslice_(x, a, b, step, value)`."""
        target = node.targets[0]
        if (
            len(node.targets) == 1
            and isinstance(target, ast.Subscript)
            and isinstance(target.slice, ast.Slice)
        ):
            parts = (target.slice.lower, target.slice.upper, target.slice.step)
            args = [self.visit(target.value)]
            args += [ast.Constant(None) if part is None else self.visit(part) for part in parts]
            args.append(self.visit(node.value))
            call = _at(ast.Call(ast.Name("_setslice_", ast.Load()), args, []), node)
            return _at(ast.Expr(call), node)
        return self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.ctx, ast.Store) and isinstance(node.slice, ast.Slice):
            raise SyntaxError(
                "assign to a slice only in a statement of its own (x[a:b] = value)",
                ("<step>", getattr(node, "lineno", 0), 0, ""),
            )
        return node


_AUG_OPS: dict[type[ast.operator], str] = {
    ast.Add: "+=", ast.Sub: "-=", ast.Mult: "*=", ast.Div: "/=", ast.FloorDiv: "//=",
    ast.Mod: "%=", ast.Pow: "**=", ast.LShift: "<<=", ast.RShift: ">>=", ast.BitAnd: "&=",
    ast.BitOr: "|=", ast.BitXor: "^=", ast.MatMult: "@=",
}  # fmt: skip


class StepTransformer(RestrictingNodeTransformer):
    # node type -> RestrictedPython's visit_<Name> for it, or its generic_visit
    # (which refuses every node type it does not know): NodeVisitor.visit's
    # lookup, done once per type instead of once per node.
    _VISITORS: ClassVar[dict[type[ast.AST], Callable[[Any, Any], Any]]] = {}

    def visit(self, node: ast.AST) -> Any:
        visitor = self._VISITORS.get(type(node))
        if visitor is None:
            name = "visit_" + type(node).__name__
            found: Callable[[Any, Any], Any] = getattr(StepTransformer, name, StepTransformer.generic_visit)
            visitor = self._VISITORS[type(node)] = found
        return visitor(self, node)

    def node_contents_visit(self, node: Any) -> Any:
        """ast.NodeTransformer.generic_visit, statement for statement, without
        its iter_fields generator (RestrictedPython's traversal of every node)."""
        for field in node._fields:
            try:
                old_value = getattr(node, field)
            except AttributeError:
                continue
            if isinstance(old_value, list):
                new_values: list[Any] = []
                for value in old_value:
                    if isinstance(value, ast.AST):
                        value = self.visit(value)
                        if value is None:
                            continue
                        if not isinstance(value, ast.AST):
                            new_values.extend(value)
                            continue
                    new_values.append(value)
                old_value[:] = new_values
            elif isinstance(old_value, ast.AST):
                new_node = self.visit(old_value)
                if new_node is None:
                    delattr(node, field)
                else:
                    setattr(node, field, new_node)
        return node

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.AST:
        """`obj[key] op= value` (RestrictedPython refuses it; models write
        `counts[word] += 1` all the time) becomes `_augitem_(obj, key, op, value)`,
        evaluating obj and key once, through the same write and operator guards."""
        target = node.target
        if isinstance(target, ast.Subscript) and not isinstance(target.slice, ast.Slice):
            call = ast.Call(
                ast.Name("_augitem_", ast.Load()),
                [
                    self.visit(target.value),
                    self.visit(target.slice),
                    ast.Constant(_AUG_OPS[type(node.op)]),
                    self.visit(node.value),
                ],
                [],
            )
            return _at(ast.Expr(call), node)
        # RestrictedPython's visitors are unannotated; they return the node
        return cast(ast.AST, super().visit_AugAssign(node))

    def visit_Module(self, node: ast.Module) -> ast.AST:
        result = cast(ast.AST, super().visit_Module(node))
        if not self.errors:
            result = _PostPass().visit(result)
        return result


def compile_step(tree: ast.Module) -> types.CodeType:
    """RestrictedPython compile of a policy-checked tree, or SANDBOX_AST_REJECTED."""
    try:
        result = compile_restricted_exec(tree, filename="<step>", policy=StepTransformer)
    except (RecursionError, MemoryError):
        raise RlmError(
            "SANDBOX_AST_REJECTED",
            "code is nested too deeply to compile",
            {"line": 0, "layer": "restrictedpython"},
        ) from None
    except SyntaxError as exc:  # parses, but does not compile: `yield` outside a function, ...
        line = exc.lineno or 0
        raise RlmError(
            "SANDBOX_AST_REJECTED",
            f"line {line}: {exc.msg}",
            {"line": line, "layer": "restrictedpython"},
        ) from None
    if result.errors or result.code is None:
        message = "; ".join(result.errors) or "RestrictedPython refused the code"
        line = _first_line(result.errors)
        raise RlmError("SANDBOX_AST_REJECTED", message, {"line": line, "layer": "restrictedpython"})
    return result.code


def _first_line(errors: Iterable[str]) -> int:
    for error in errors:
        if error.startswith("Line "):
            digits = error[5:].split(":", 1)[0]
            if digits.isdigit():
                return int(digits)
    return 0


_DICT_SPLAT = object()  # marks `**mapping` in a rewritten dict display


class Guards:
    """The guard functions and builtins of one step, bound to its runtime."""

    def __init__(self, runtime: StepRuntime) -> None:
        self.rt = runtime
        self.real_types: dict[Any, type] = {}  # wrapped constructor -> real type
        self.sizer = _sizes.TextSizer(runtime.tick)
        self.checks = _sizes.method_checks(runtime.tick)

    # --- iteration -------------------------------------------------------------
    def ticking(self, iterable: Any) -> Iterator[Any]:
        tick = self.rt.tick
        for item in iter(iterable):
            tick()
            yield item

    def getiter(self, iterable: Any) -> Iterator[Any]:
        return self.ticking(iterable)

    # --- attributes and items ----------------------------------------------------
    def getattr(self, obj: Any, name: Any, *default: Any) -> Any:
        if type(name) is not str:
            raise TypeError("attribute names must be str")
        if name.startswith("_"):
            raise AttributeError(f"attribute {name!r} is not accessible")
        real = self.real_types.get(obj, obj) if type(obj) is types.FunctionType else obj
        if (isinstance(obj, str) or real is str) and name in ("format", "format_map"):
            raise AttributeError("str.format is not available in steps; use f-strings")
        if isinstance(obj, BaseException) and name != "args":
            raise AttributeError("only .args of an exception is accessible")
        if type(real) is type and real in _SAFE_TYPES:
            if name in _SAFE_TYPE_DENIED_NAMES:
                raise AttributeError(f"attribute {name!r} is not accessible")
            obj = real
            check = self.checks((real, name))
            if check is not None and name not in _CLASS_METHODS:
                return self._unbound(real, name, check)  # str.ljust(s, n): the same bound
        elif isinstance(obj, _DENIED_RESULT_TYPES):
            raise AttributeError(f"attributes of {type(obj).__name__} objects are not accessible")
        value = getattr(obj, name, *default)
        check = self.checks((obj if type(obj) is type else type(obj), name))
        if check is not None:
            return check(obj, value)
        if isinstance(value, _DENIED_RESULT_TYPES):
            raise AttributeError(f"attribute {name!r} is not accessible")
        return value

    @staticmethod
    def _unbound(kind: type, name: str, check: Any) -> Callable[..., Any]:
        def call(target: Any, *args: Any, **kwargs: Any) -> Any:
            if not isinstance(target, kind):
                raise TypeError(f"{kind.__name__}.{name} needs a {kind.__name__}")
            return check(target, getattr(target, name))(*args, **kwargs)

        call.__name__ = name
        return call

    def getitem(self, obj: Any, key: Any) -> Any:
        value = obj[key]
        if isinstance(value, _DENIED_RESULT_TYPES):
            raise TypeError("that item is not accessible")
        return value

    def write(self, obj: Any) -> Any:
        if type(obj) in (dict, list):
            return obj
        raise TypeError(f"cannot assign to attributes or items of {type(obj).__name__}")

    def setslice(self, obj: Any, lower: Any, upper: Any, step: Any, value: Any) -> None:
        """`x[a:b] = value`: a list may grow by len(value) - (b - a)."""
        target = self.write(obj)
        key = slice(lower, upper, step)
        if type(target) is list:
            if _sizes._is_lazy(value) or not hasattr(value, "__len__"):
                value = list(self.ticking(value))
            replaced = len(range(*key.indices(len(target))))
            _sizes.check_items(len(target) - replaced + len(value), "the list")
        target[key] = value

    def dict_display(self, *parts: Any) -> dict[Any, Any]:
        """`{**a, k: v, **b}` (parts: key, value, ... with _DICT_SPLAT for `**`)."""
        size = 0
        for index in range(0, len(parts), 2):
            mapping = parts[index + 1]
            if parts[index] is _DICT_SPLAT:
                if not hasattr(mapping, "keys"):
                    raise TypeError(f"'{type(mapping).__name__}' object is not a mapping")
                size += len(mapping)
            else:
                size += 1
        _sizes.check_items(size, "the dict")
        result: dict[Any, Any] = {}
        for index in range(0, len(parts), 2):
            if parts[index] is _DICT_SPLAT:
                result.update(parts[index + 1])
            else:
                result[parts[index]] = parts[index + 1]
        return result

    # --- operators -----------------------------------------------------------------
    def mod(self, left: Any, right: Any) -> Any:
        return _sizes.printf(left, right, self.sizer)

    def binop(self, op: str, left: Any, right: Any) -> Any:
        return self._binops[op](left, right)

    @property
    def _binops(self) -> dict[str, Callable[[Any, Any], Any]]:
        return {
            "add": _sizes.add, "mul": _sizes.mul, "pow": _sizes.power,
            "lshift": _sizes.lshift, "mod": self.mod, "or": _sizes.union, "xor": _sizes.symmetric,
        }  # fmt: skip

    _INPLACE: ClassVar[dict[str, Callable[[Any, Any], Any]]] = {
        "-=": operator.isub, "/=": operator.itruediv, "//=": operator.ifloordiv,
        ">>=": operator.irshift, "&=": operator.iand, "@=": operator.imatmul,
    }  # fmt: skip
    _GUARDED_INPLACE: ClassVar[dict[str, str]] = {
        "+=": "add", "*=": "mul", "**=": "pow", "<<=": "lshift", "%=": "mod", "|=": "or", "^=": "xor",
    }  # fmt: skip

    def inplacevar(self, op: str, target: Any, value: Any) -> Any:
        guarded = self._GUARDED_INPLACE.get(op)
        if guarded is not None:
            kind = type(target)
            if op == "+=" and kind is list:  # list += any iterable, in place
                if _sizes._is_lazy(value) or not hasattr(value, "__len__"):
                    value = list(self.ticking(value))
                _sizes.check_items(len(target) + len(value), "the result of +=")
                target += value
                return target
            if op in ("|=", "^=") and kind in (dict, set) and hasattr(value, "__len__"):
                _sizes.check_items(len(target) + len(value), f"the result of {op}")
                if op == "|=":
                    target |= value
                else:
                    target ^= value
                return target
            if op == "*=" and kind is list and type(value) in (int, bool):
                _sizes.check_items(len(target) * max(value, 0), "the result of *=")
                target *= value
                return target
            return self.binop(guarded, target, value)
        function = self._INPLACE.get(op)
        if function is None:
            raise TypeError(f"operator {op} is not supported")
        return function(target, value)

    def augitem(self, obj: Any, key: Any, op: str, value: Any) -> None:
        target = self.write(obj)
        target[key] = self.inplacevar(op, target[key], value)

    @staticmethod
    def apply(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return function(*args, **kwargs)

    # --- text ----------------------------------------------------------------------
    def text(self, value: Any) -> str:
        """str(value), sized first (a shared-reference list prints every repetition)."""
        if type(value) is str:
            return value
        if type(value) not in (int, float, bool) and value is not None:
            _sizes.check_chars(self.sizer.str_size(value), "the text of that value")
        return str(value)

    def format(self, value: Any, conversion: int, spec: str) -> str:
        return _sizes.format_value(value, conversion, spec, self.sizer)

    # --- print -------------------------------------------------------------------
    def print_factory(self) -> type:
        runtime = self.rt
        text = self.text

        class _Print:
            def __init__(self, _getattr_: Any = None) -> None:
                pass

            def write(self, text: str) -> None:
                runtime.write(text)

            def _call_print(self, *objects: Any, sep: Any = " ", end: Any = "\n", **kw: Any) -> None:
                if kw.get("file") is not None or set(kw) - {"file", "flush"}:
                    raise TypeError("print() takes only sep and end here")
                # Piece by piece into the truncating buffer: `sep` is never
                # repeated into one big string.
                separator = " " if sep is None else text(sep)
                for index, item in enumerate(objects):
                    if index:
                        runtime.write(separator)
                    runtime.write(text(item))
                runtime.write("\n" if end is None else text(end))

            def __call__(self) -> str:
                return runtime.stdout()

        return _Print

    # --- builtins ------------------------------------------------------------------
    def builtins(self, allowlist: Iterable[str]) -> dict[str, Any]:
        available = self._available_builtins()
        for name in _EXCEPTION_NAMES:
            available[name] = getattr(_py_builtins, name)
        chosen = {name: available[name] for name in allowlist if name in available}
        chosen.pop("print", None)  # print is routed through _print_ by RestrictedPython
        return chosen

    def _available_builtins(self) -> dict[str, Any]:
        """Every builtin a step may be given, each one fresh for this step."""
        ticking = self.ticking
        wrapped_types = self.real_types

        def wrap_type(real: type) -> Any:
            return _wrap_type(real, ticking, wrapped_types)

        def one_iterable(function: Callable[..., Any]) -> Callable[..., Any]:
            return _one_iterable(function, ticking)

        return {
            "len": len, "range": StepRange, "abs": abs, "round": round, "int": int,
            "float": float, "str": _str_builtin(self.text, wrapped_types), "bool": bool, "print": None,
            "sorted": lambda iterable, key=None, reverse=False: sorted(
                ticking(iterable), key=key, reverse=reverse
            ),
            "zip": lambda *its, strict=False: zip(*(ticking(i) for i in its), strict=strict),
            "enumerate": lambda iterable, start=0: enumerate(ticking(iterable), start),
            "map": lambda function, *its: map(function, *(ticking(i) for i in its)),
            "filter": lambda function, iterable: filter(function, ticking(iterable)),
            "reversed": lambda seq: ticking(reversed(seq)),
            "iter": lambda iterable: ticking(iterable),
            "next": next,
            "min": one_iterable(min), "max": one_iterable(max), "sum": _sum_builtin(ticking),
            "any": one_iterable(any), "all": one_iterable(all),
            "list": wrap_type(list), "tuple": wrap_type(tuple), "set": wrap_type(set),
            "frozenset": wrap_type(frozenset), "dict": wrap_type(dict),
            "isinstance": _isinstance_builtin(wrapped_types), "pow": _pow_builtin(),
            "divmod": divmod, "chr": chr, "ord": ord, "hex": _digits(hex, 4), "bin": _digits(bin, 1),
            "oct": _digits(oct, 3), "repr": _repr_builtin(self.sizer), "callable": callable, "slice": slice,
            "True": True, "False": False, "None": None,
        }  # fmt: skip

    def globals(self, allowlist: Iterable[str]) -> dict[str, Any]:
        return {
            "__builtins__": self.builtins(allowlist),
            "__name__": "step",
            "_getattr_": self.getattr,
            "_getitem_": self.getitem,
            "_getiter_": self.getiter,
            "_write_": self.write,
            "_inplacevar_": self.inplacevar,
            "_apply_": self.apply,
            "_print_": self.print_factory(),
            "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
            "_unpack_sequence_": guarded_unpack_sequence,
            "_tick_": self.rt.tick,
            "_op_add_": _sizes.add,
            "_op_mul_": _sizes.mul,
            "_op_pow_": _sizes.power,
            "_op_lshift_": _sizes.lshift,
            "_op_mod_": self.mod,
            "_op_or_": _sizes.union,
            "_op_xor_": _sizes.symmetric,
            "_augitem_": self.augitem,
            "_format_": self.format,
            "_fstring_": _sizes.join_fstring,
            "_setslice_": self.setslice,
            "_dict_display_": self.dict_display,
            "_dict_splat_": _DICT_SPLAT,
        }


# --- the builtins' wrappers (each call makes a fresh function for one step) --------
_EXCEPTION_NAMES = (
    "Exception", "ValueError", "TypeError", "KeyError", "IndexError",
    "ZeroDivisionError", "AttributeError", "RuntimeError", "StopIteration",
    "ArithmeticError", "LookupError", "NameError", "NotImplementedError",
    "OverflowError", "AssertionError", "UnicodeError", "MemoryError",
)  # fmt: skip


def _wrap_type(real: type, ticking: Callable[[Any], Iterator[Any]], wrapped_types: dict[Any, type]) -> Any:
    """A constructor for `real` that iterates its argument through the ticking
    guard (a dict sized first); `isinstance` maps it back to `real`."""

    def constructor(*args: Any, **kwargs: Any) -> Any:
        if real is dict:
            size = len(kwargs) + sum(len(a) for a in args[:1] if type(a) is dict)
            _sizes.check_items(size, "the dict")
        if args and real is dict and type(args[0]) is dict:
            return real(args[0], **kwargs)  # a copy: bounded by what exists
        if args:
            return real(ticking(args[0]), *args[1:], **kwargs)
        return real(**kwargs)

    constructor.__name__ = real.__name__
    wrapped_types[constructor] = real
    return constructor


def _str_builtin(text: Callable[[Any], str], wrapped_types: dict[Any, type]) -> Callable[..., str]:
    """str(value) sized by `text`; str(data, encoding, errors) sized as a decode."""

    def str_(*args: Any, **kwargs: Any) -> str:
        if len(args) == 1 and not kwargs:
            return text(args[0])
        if args and type(args[0]) is bytes:  # str(data, encoding, errors): a decode
            _sizes.check_chars(len(args[0]) * 4, "the decoded text")
        return str(*args, **kwargs)

    str_.__name__ = "str"
    wrapped_types[str_] = str
    return str_


def _one_iterable(
    function: Callable[..., Any], ticking: Callable[[Any], Iterator[Any]]
) -> Callable[..., Any]:
    """min/max/any/all: a single iterable argument goes through the ticking guard."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if len(args) == 1:
            return function(ticking(args[0]), **kwargs)
        return function(*args, **kwargs)

    wrapper.__name__ = function.__name__
    return wrapper


def _sum_builtin(ticking: Callable[[Any], Iterator[Any]]) -> Callable[..., Any]:
    """sum, ticking per item and sizing each addition."""

    def sum_(iterable: Any, start: Any = 0) -> Any:
        total = start
        for item in ticking(iterable):
            total = _sizes.add(total, item)
        return total

    return sum_


def _isinstance_builtin(wrapped_types: dict[Any, type]) -> Callable[[Any, Any], bool]:
    """isinstance that understands the wrapped constructors as their real types."""

    def real_types(classinfo: Any) -> Any:
        if isinstance(classinfo, tuple):
            return tuple(real_types(c) for c in classinfo)
        return wrapped_types.get(classinfo, classinfo)

    def isinstance_(obj: Any, classinfo: Any) -> bool:
        return _py_builtins.isinstance(obj, real_types(classinfo))

    return isinstance_


def _pow_builtin() -> Callable[..., Any]:
    """pow, sized before it computes."""

    def pow_(base: Any, exp: Any, mod: Any = None) -> Any:
        if mod is not None:
            return _sizes.pow_mod(base, exp, mod)
        return _sizes.power(base, exp)

    return pow_


def _repr_builtin(sizer: _sizes.TextSizer) -> Callable[[Any], str]:
    """repr, sized before it builds the text."""

    def repr_(value: Any) -> str:
        _sizes.check_chars(sizer.repr_size(value), "the text of that value")
        return repr(value)

    return repr_


def _digits(function: Callable[[Any], str], bits_per_char: int) -> Callable[[Any], str]:
    """hex/bin/oct, sized by the number's bit length before they write it."""

    def call(number: Any) -> str:
        if type(number) in (int, bool):
            _sizes.check_chars(abs(number).bit_length() // bits_per_char + 3, "the digits")
        return function(number)

    call.__name__ = function.__name__
    return call
