"""Layer 2: RestrictedPython compile, its guards, and the builtins.

The AST policy has run already. RestrictedPython then rejects underscore
names, frame/code attributes and more, and routes attribute access, item
access, iteration, writes, in-place operators and print through the guards
below. After its pass, a second transformer adds what RestrictedPython has
no hook for: `_tick_()` before every statement and at the start of every
lambda body (the line budget), `_getiter_` around every `*iterable` in a
display or call (C-level unpacking would skip the tick), `_binop_` around
`*`, `**`, `<<` and `%` (memory bombs like 'x' * 10**10), and `_format_`
around f-string format specs.

Builtins are the spec's allowlist plus: any, all, divmod, pow (bounded),
chr, ord, hex, bin, oct, repr, callable, frozenset, slice, iter, next, and
the ordinary exception classes (so `except ValueError:` works). Iterating
builtins (sorted, zip, tuple, list, set, dict, sum, min, max, map, filter,
enumerate, reversed, any, all, frozenset, iter) iterate through the ticking
guard; `isinstance` understands the wrapped types. Never added: getattr,
type, object, vars, dir, open, eval, exec, compile, globals, locals,
breakpoint, memoryview, format, hash, id.

Size guards (checked before the allocation, MemoryError the step may catch):
`*`, `**`, `<<`, `%` formatting widths, `+=` on sequences, the str/bytes
methods whose result size an argument sets (ljust, rjust, center, zfill,
expandtabs, replace, join, translate; bound or unbound), int.to_bytes, and
any number in an f-string format spec (`f"{x:>{10**9}}"`). Container methods
that consume an iterable in C (extend, update, fromkeys, union, ...) tick
per element of a range or iterator argument. Class attributes
of the builtin types str/int/float/bool/list/tuple/dict/set/frozenset are
readable (dict.fromkeys, str.maketrans) except `mro`.
"""

from __future__ import annotations

import ast
import builtins as _py_builtins
import operator
import types
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar

import regex
from RestrictedPython import RestrictingNodeTransformer, compile_restricted_exec
from RestrictedPython.Guards import guarded_iter_unpack_sequence, guarded_unpack_sequence

from rlm_rs.errors import RlmError
from rlm_rs.sandbox._runtime import StepRuntime

_MAX_SEQUENCE_RESULT = 50_000_000  # chars (str/bytes) a single operation may produce
_MAX_SEQUENCE_ITEMS = 10_000_000  # items (list/tuple: 8 bytes each) likewise


def _max_length(seq: Any) -> int:
    return _MAX_SEQUENCE_ITEMS if isinstance(seq, list | tuple) else _MAX_SEQUENCE_RESULT


_MAX_POW_BITS = 100_000
_MAX_SHIFT = 100_000

# Class attributes reachable on these builtin types (str.maketrans,
# int.from_bytes, float.fromhex, dict.fromkeys...); `mro` is refused because
# it hands back `object`.
_SAFE_TYPES = frozenset({str, int, float, bool, list, tuple, dict, set, frozenset})
_SAFE_TYPE_DENIED_NAMES = frozenset({"mro"})
# str methods whose result size is set by an argument, checked before they run.
_WIDTH_METHODS = frozenset({"ljust", "rjust", "center", "zfill"})
_FORMAT_SPEC_NUMBER = regex.compile(r"\d+")
_MAX_FORMAT_NUMBER = 100_000  # width or precision in an f-string format spec

_DENIED_RESULT_TYPES = (
    types.ModuleType,
    types.FrameType,
    types.CodeType,
    types.TracebackType,
    types.GeneratorType,
    types.CoroutineType,
    type,
)


class _PostPass(ast.NodeTransformer):
    """Adds `_tick_()` before every statement and `_binop_` around risky operators."""

    _OPS: ClassVar[dict[type[ast.operator], str]] = {
        ast.Mult: "mul",
        ast.Pow: "pow",
        ast.LShift: "lshift",
        ast.Mod: "mod",
    }

    def _ticked(self, body: list[ast.stmt]) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for stmt in body:
            tick = ast.Expr(ast.Call(ast.Name("_tick_", ast.Load()), [], []))
            out.append(ast.copy_location(tick, stmt))
            out.append(stmt)
        return out

    def generic_visit(self, node: ast.AST) -> ast.AST:
        super().generic_visit(node)
        for field in ("body", "orelse", "finalbody"):
            value = getattr(node, field, None)
            if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
                setattr(node, field, self._ticked(value))
        return node

    def visit_Starred(self, node: ast.Starred) -> ast.AST:
        """`[*it]`, `f(*it)`: unpacking iterates in C, so route it through the
        ticking iterator (assignment targets are unpacked by a guard already)."""
        self.generic_visit(node)
        if isinstance(node.ctx, ast.Load):
            call = ast.Call(ast.Name("_getiter_", ast.Load()), [node.value], [])
            node.value = ast.copy_location(call, node.value)
        return node

    def visit_Lambda(self, node: ast.Lambda) -> ast.AST:
        """A lambda has no statements to tick: its body becomes
        `_tick_() or body` (the tick returns None), so recursion through
        lambdas counts too."""
        self.generic_visit(node)
        tick = ast.Call(ast.Name("_tick_", ast.Load()), [], [])
        node.body = ast.copy_location(ast.BoolOp(ast.Or(), [tick, node.body]), node.body)
        return node

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        name = self._OPS.get(type(node.op))
        if name is None:
            return node
        call = ast.Call(ast.Name("_binop_", ast.Load()), [ast.Constant(name), node.left, node.right], [])
        return ast.copy_location(call, node)


_AUG_OPS: dict[type[ast.operator], str] = {
    ast.Add: "+=", ast.Sub: "-=", ast.Mult: "*=", ast.Div: "/=", ast.FloorDiv: "//=",
    ast.Mod: "%=", ast.Pow: "**=", ast.LShift: "<<=", ast.RShift: ">>=", ast.BitAnd: "&=",
    ast.BitOr: "|=", ast.BitXor: "^=", ast.MatMult: "@=",
}  # fmt: skip


class StepTransformer(RestrictingNodeTransformer):
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
            return ast.copy_location(ast.Expr(call), node)
        result: Any = super().visit_AugAssign(node)
        return result

    def visit_Module(self, node: ast.Module) -> ast.AST:
        result: Any = super().visit_Module(node)
        if not self.errors:
            result = _PostPass().visit(_FormatPass().visit(result))
            ast.fix_missing_locations(result)
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


def _check_size(size: int) -> None:
    if size > _MAX_SEQUENCE_RESULT:
        raise MemoryError("result of that method would be too large")


def _bounded_width(guards: Guards, text: str | bytes, method: Any) -> Any:
    def call(width: Any, *args: Any) -> Any:
        if isinstance(width, int):
            _check_size(width)
        return method(width, *args)

    return call


def _bounded_expandtabs(guards: Guards, text: str | bytes, method: Any) -> Any:
    tab: Any = "\t" if type(text) is str else b"\t"

    def call(tabsize: Any = 8) -> Any:
        if isinstance(tabsize, int):
            _check_size(len(text) + text.count(tab) * max(tabsize, 0))
        return method(tabsize)

    return call


def _bounded_replace(guards: Guards, text: Any, method: Any) -> Any:
    def call(old: Any, new: Any, count: Any = -1) -> Any:
        if type(old) is type(text) and type(new) is type(text) and len(new) > len(old):
            hits = text.count(old) if old else len(text) + 1
            if isinstance(count, int) and count >= 0:
                hits = min(hits, count)
            _check_size(len(text) + hits * (len(new) - len(old)))
        return method(old, new, count)

    return call


def _bounded_join(guards: Guards, text: str | bytes, method: Any) -> Any:
    def call(iterable: Any) -> Any:
        items = list(guards.ticking(iterable))
        size = len(text) * max(len(items) - 1, 0)
        size += sum(len(i) for i in items if type(i) in (str, bytes))
        _check_size(size)
        return method(items)

    return call


def _bounded_translate(guards: Guards, text: Any, method: Any) -> Any:
    def call(table: Any) -> Any:
        if type(text) is str and type(table) is dict:
            longest = max((len(v) for v in table.values() if type(v) is str), default=1)
            _check_size(len(text) * longest)
        return method(table)

    return call


_STR_WRAPPERS: dict[str, Callable[[Guards, Any, Any], Any]] = {
    **{name: _bounded_width for name in _WIDTH_METHODS},
    "expandtabs": _bounded_expandtabs,
    "replace": _bounded_replace,
    "join": _bounded_join,
    "translate": _bounded_translate,
}

# Container methods that consume any iterable in C (no tick per element):
# an argument that is a range or an iterator is passed through the ticking
# iterator, so `[].extend(range(10**12))` hits the line budget.
_CONSUMING_METHODS = frozenset(
    {
        "extend", "update", "fromkeys", "union", "intersection", "difference",
        "symmetric_difference", "issubset", "issuperset", "isdisjoint",
        "intersection_update", "difference_update", "symmetric_difference_update",
    }
)  # fmt: skip
_CONSUMING_TYPES = (list, set, frozenset, dict)


def _is_lazy(value: Any) -> bool:
    """A range or an iterator: its length is not already paid for in memory."""
    return type(value) is range or isinstance(value, Iterator)


_PRINTF_SPEC = regex.compile(r"%[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_printf(template: str | bytes, args: Any) -> None:
    """`"%1000000000d" % 1` and `"%*d" % (10**9, 1)` size their result before
    any tick runs: widths and precisions above the format limit are refused."""
    text = template.decode("latin-1") if isinstance(template, bytes) else template
    if "%" not in text:
        return
    star = False
    for match in _PRINTF_SPEC.finditer(text):
        for number in match.groups():
            if number == "*":
                star = True
            elif number is not None and (len(number) > 6 or int(number) > _MAX_FORMAT_NUMBER):
                raise ValueError(f"format width/precision above {_MAX_FORMAT_NUMBER}")
    if star:
        values = args if type(args) is tuple else (args,)
        if any(type(v) is int and v > _MAX_FORMAT_NUMBER for v in values):
            raise ValueError(f"format width/precision above {_MAX_FORMAT_NUMBER}")


class _FormatPass(ast.NodeTransformer):
    """`f"{x:>{n}}"` -> `f"{_format_(x, f'>{n}')}"`: a format spec's width or
    precision (which sizes the result before any tick runs) is checked."""

    def visit_FormattedValue(self, node: ast.FormattedValue) -> ast.AST:
        self.generic_visit(node)
        if node.format_spec is None:
            return node
        call = ast.Call(
            ast.Name("_format_", ast.Load()),
            [node.value, ast.Constant(node.conversion), node.format_spec],
            [],
        )
        return ast.copy_location(ast.FormattedValue(call, -1, None), node)


def format_value(value: Any, conversion: int, spec: str) -> str:
    for number in _FORMAT_SPEC_NUMBER.findall(spec):
        if len(number) > 6 or int(number) > _MAX_FORMAT_NUMBER:
            raise ValueError(f"format width/precision above {_MAX_FORMAT_NUMBER}")
    if conversion == ord("r"):
        value = repr(value)
    elif conversion == ord("s"):
        value = str(value)
    elif conversion == ord("a"):
        value = ascii(value)
    return format(value, spec)


class Guards:
    """The guard functions and builtins of one step, bound to its runtime."""

    def __init__(self, runtime: StepRuntime) -> None:
        self.rt = runtime
        self.real_types: dict[Any, type] = {}  # wrapped constructor -> real type

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
        if (isinstance(obj, str) or obj is str) and name in ("format", "format_map"):
            raise AttributeError("str.format is not available in steps; use f-strings")
        if isinstance(obj, BaseException) and name != "args":
            raise AttributeError("only .args of an exception is accessible")
        real = self.real_types.get(obj, obj) if type(obj) is types.FunctionType else obj
        if type(real) is type and real in _SAFE_TYPES:
            if name in _SAFE_TYPE_DENIED_NAMES:
                raise AttributeError(f"attribute {name!r} is not accessible")
            obj = real
            if real is str and name in _STR_WRAPPERS:  # str.ljust(s, n): same bound
                return self._unbound_str_method(name)
        elif isinstance(obj, _DENIED_RESULT_TYPES):
            raise AttributeError(f"attributes of {type(obj).__name__} objects are not accessible")
        value = getattr(obj, name, *default)
        if type(obj) in (str, bytes) and name in _STR_WRAPPERS:
            return _STR_WRAPPERS[name](self, obj, value)
        kind = obj if type(obj) is type else type(obj)
        if name in _CONSUMING_METHODS and kind in _CONSUMING_TYPES:
            return self._consuming(value)
        if name == "to_bytes" and kind in (int, bool):
            return self._to_bytes(value, bound=kind is not obj)
        if isinstance(value, _DENIED_RESULT_TYPES):
            raise AttributeError(f"attribute {name!r} is not accessible")
        return value

    def _consuming(self, method: Any) -> Callable[..., Any]:
        ticking = self.ticking

        def call(*args: Any, **kwargs: Any) -> Any:
            ticked = (ticking(a) if _is_lazy(a) else a for a in args)
            return method(*ticked, **kwargs)

        return call

    @staticmethod
    def _to_bytes(method: Any, *, bound: bool) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            position = 0 if bound else 1
            length = kwargs.get("length", args[position] if len(args) > position else 1)
            if isinstance(length, int):
                _check_size(length)
            return method(*args, **kwargs)

        return call

    def _unbound_str_method(self, name: str) -> Callable[..., Any]:
        def call(text: Any, *args: Any) -> Any:
            if type(text) is not str:
                raise TypeError(f"str.{name} needs a str")
            return _STR_WRAPPERS[name](self, text, getattr(text, name))(*args)

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

    # --- operators -----------------------------------------------------------------
    def binop(self, op: str, left: Any, right: Any) -> Any:
        if op == "mul":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | bytes | list | tuple) and isinstance(times, int):
                    if len(seq) * max(times, 0) > _max_length(seq):
                        raise MemoryError("result of * would be too large")
            return left * right
        if op == "pow":
            if isinstance(left, int) and isinstance(right, int) and abs(left) > 1:
                if right * max(abs(left).bit_length(), 1) > _MAX_POW_BITS:
                    raise MemoryError("result of ** would be too large")
            return left**right
        if op == "mod":
            if type(left) in (str, bytes):
                _check_printf(left, right)
            return left % right
        if isinstance(right, int) and right > _MAX_SHIFT:
            raise MemoryError("result of << would be too large")
        return left << right

    _INPLACE: ClassVar[dict[str, Callable[[Any, Any], Any]]] = {
        "+=": operator.iadd, "-=": operator.isub, "/=": operator.itruediv,
        "//=": operator.ifloordiv, "%=": operator.imod, ">>=": operator.irshift,
        "&=": operator.iand, "|=": operator.ior, "^=": operator.ixor,
        "@=": operator.imatmul,
    }  # fmt: skip

    def inplacevar(self, op: str, target: Any, value: Any) -> Any:
        if op == "*=":
            return self.binop("mul", target, value)
        if op == "**=":
            return self.binop("pow", target, value)
        if op == "<<=":
            return self.binop("lshift", target, value)
        if op == "%=":
            return self.binop("mod", target, value)
        if op == "+=" and isinstance(target, str | bytes | list) and hasattr(value, "__len__"):
            if len(target) + len(value) > _max_length(target):
                raise MemoryError("result of += would be too large")
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

    # --- print -------------------------------------------------------------------
    def print_factory(self) -> type:
        runtime = self.rt

        class _Print:
            def __init__(self, _getattr_: Any = None) -> None:
                pass

            def write(self, text: str) -> None:
                runtime.write(text)

            def _call_print(self, *objects: Any, sep: Any = " ", end: Any = "\n", **kw: Any) -> None:
                if kw.get("file") is not None or set(kw) - {"file", "flush"}:
                    raise TypeError("print() takes only sep and end here")
                runtime.write(str(sep).join(str(o) for o in objects) + str(end))

            def __call__(self) -> str:
                return runtime.stdout()

        return _Print

    # --- builtins ------------------------------------------------------------------
    def builtins(self, allowlist: Iterable[str]) -> dict[str, Any]:
        ticking = self.ticking
        wrapped_types = self.real_types

        def wrap_type(real: type) -> Any:
            def constructor(*args: Any, **kwargs: Any) -> Any:
                if args and real is dict and type(args[0]) is dict:
                    return real(args[0], **kwargs)  # a copy: bounded by what exists
                if args:
                    return real(ticking(args[0]), *args[1:], **kwargs)
                return real(**kwargs)

            constructor.__name__ = real.__name__
            wrapped_types[constructor] = real
            return constructor

        def one_iterable(function: Callable[..., Any]) -> Callable[..., Any]:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                if len(args) == 1:
                    return function(ticking(args[0]), **kwargs)
                return function(*args, **kwargs)

            wrapper.__name__ = function.__name__
            return wrapper

        def real_types(classinfo: Any) -> Any:
            if isinstance(classinfo, tuple):
                return tuple(real_types(c) for c in classinfo)
            return wrapped_types.get(classinfo, classinfo)

        def isinstance_(obj: Any, classinfo: Any) -> bool:
            return _py_builtins.isinstance(obj, real_types(classinfo))

        def pow_(base: Any, exp: Any, mod: Any = None) -> Any:
            if mod is not None:
                return _py_builtins.pow(base, exp, mod)
            return self.binop("pow", base, exp)

        available: dict[str, Any] = {
            "len": len, "range": range, "abs": abs, "round": round, "int": int,
            "float": float, "str": str, "bool": bool, "print": None,
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
            "min": one_iterable(min), "max": one_iterable(max), "sum": one_iterable(sum),
            "any": one_iterable(any), "all": one_iterable(all),
            "list": wrap_type(list), "tuple": wrap_type(tuple), "set": wrap_type(set),
            "frozenset": wrap_type(frozenset), "dict": wrap_type(dict),
            "isinstance": isinstance_, "pow": pow_,
            "divmod": divmod, "chr": chr, "ord": ord, "hex": hex, "bin": bin, "oct": oct,
            "repr": repr, "callable": callable, "slice": slice,
            "True": True, "False": False, "None": None,
        }  # fmt: skip
        for name in (
            "Exception", "ValueError", "TypeError", "KeyError", "IndexError",
            "ZeroDivisionError", "AttributeError", "RuntimeError", "StopIteration",
            "ArithmeticError", "LookupError", "NameError", "NotImplementedError",
            "OverflowError", "AssertionError", "UnicodeError", "MemoryError",
        ):  # fmt: skip
            available[name] = getattr(_py_builtins, name)
        chosen = {name: available[name] for name in allowlist if name in available}
        chosen.pop("print", None)  # print is routed through _print_ by RestrictedPython
        return chosen

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
            "_binop_": self.binop,
            "_augitem_": self.augitem,
            "_format_": format_value,
        }
