"""Layer 1: the AST policy (docs/api.md#sandbox-policy, and more), before RestrictedPython.

Rejects, with the offending line: imports, global/nonlocal, any attribute
name containing "__", the forbidden names below, class definitions, async
code and `except*`. Rewrites bare `except:` to `except Exception:` so no step
can catch the sandbox's own stop signal. Never executes anything.
"""

from __future__ import annotations

import ast

from rlm_rs.errors import RlmError

FORBIDDEN_NAMES = frozenset(
    {
        # the spec's minimum (docs/api.md#sandbox-policy)
        "eval", "exec", "compile", "open", "input", "__import__", "globals", "locals",
        "vars", "dir", "help",
        "os", "sys", "subprocess", "socket", "pathlib", "shutil", "urllib", "requests",
        "http",
        # and more: introspection, object graph and escape hatches
        "getattr", "setattr", "delattr", "hasattr", "type", "object", "super",
        "breakpoint", "memoryview", "bytearray", "bytes", "classmethod",
        "staticmethod", "property", "id", "issubclass", "__builtins__", "__build_class__",
        "BaseException", "SystemExit", "KeyboardInterrupt", "GeneratorExit",
        "importlib", "builtins", "ctypes", "gc", "inspect", "code", "codecs", "pickle",
        "marshal", "threading", "multiprocessing", "signal", "resource", "mmap",
        "asyncio", "io", "tempfile", "glob", "fcntl", "pty", "posix", "string",
    }
)  # fmt: skip

_FORBIDDEN_NODES: dict[type[ast.AST], str] = {
    ast.Import: "import statements are not allowed: everything you need is a global",
    ast.ImportFrom: "import statements are not allowed: everything you need is a global",
    ast.Global: "global statements are not allowed",
    ast.Nonlocal: "nonlocal statements are not allowed",
    ast.ClassDef: "class definitions are not supported: use dicts and functions",
    ast.AsyncFunctionDef: "async code is not supported",
    ast.AsyncFor: "async code is not supported",
    ast.AsyncWith: "async code is not supported",
    ast.Await: "async code is not supported",
    ast.TryStar: "except* is not supported",
}


def _reject(node: ast.AST, message: str) -> RlmError:
    line = getattr(node, "lineno", 0)
    return RlmError("SANDBOX_AST_REJECTED", f"line {line}: {message}", {"line": line, "layer": "ast_policy"})


def parse_and_check(source: str, max_code_chars: int) -> ast.Module:
    """Parse `source` and apply the policy; RlmError(SANDBOX_AST_REJECTED) on any violation."""
    if len(source) > max_code_chars:
        raise RlmError(
            "SANDBOX_AST_REJECTED",
            f"code is {len(source)} chars; the limit is {max_code_chars}",
            {"line": 0, "layer": "ast_policy", "max_code_chars": max_code_chars},
        )
    try:
        tree = ast.parse(source, filename="<step>", mode="exec")
    except SyntaxError as exc:
        line = exc.lineno or 0
        raise RlmError(
            "SANDBOX_AST_REJECTED",
            f"line {line}: syntax error: {exc.msg}",
            {"line": line, "layer": "ast_policy"},
        ) from None
    except (RecursionError, MemoryError, ValueError) as exc:
        raise RlmError(
            "SANDBOX_AST_REJECTED",
            f"code could not be parsed ({type(exc).__name__}: nested too deeply or malformed)",
            {"line": 0, "layer": "ast_policy"},
        ) from None
    try:
        _check(tree)
    except RecursionError:
        raise RlmError(
            "SANDBOX_AST_REJECTED",
            "code is nested too deeply",
            {"line": 0, "layer": "ast_policy"},
        ) from None
    return tree


def _check(tree: ast.Module) -> None:
    for node in ast.walk(tree):
        message = _FORBIDDEN_NODES.get(type(node))
        if message:
            raise _reject(node, message)
        if isinstance(node, ast.Attribute) and "__" in node.attr:
            raise _reject(node, f"attribute {node.attr!r}: names containing '__' are not allowed")
        if isinstance(node, ast.Name) and node.id in FORBIDDEN_NAMES:
            raise _reject(node, f"name {node.id!r} is not allowed in a step")
        if isinstance(node, ast.arg | ast.alias) and (
            "__" in (getattr(node, "arg", None) or getattr(node, "name", "") or "")
        ):
            raise _reject(node, "names containing '__' are not allowed")
        if isinstance(node, ast.FunctionDef):
            if node.name in FORBIDDEN_NAMES or "__" in node.name:
                raise _reject(node, f"function name {node.name!r} is not allowed")
        if isinstance(node, ast.keyword) and node.arg and "__" in node.arg:
            raise _reject(node, f"keyword {node.arg!r}: names containing '__' are not allowed")
        if isinstance(node, ast.ExceptHandler) and node.type is None:
            # bare except -> except Exception (the sandbox's stop signal is a
            # BaseException and must stay uncatchable)
            node.type = ast.copy_location(ast.Name(id="Exception", ctx=ast.Load()), node)
