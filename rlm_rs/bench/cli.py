"""`rlm-rs bench NAME [--json]`: discovers rlm_rs/bench/<name>.py modules."""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
from typing import Any

import rlm_rs.bench as bench_pkg


def _bench_modules() -> dict[str, Any]:
    modules = {}
    for info in pkgutil.iter_modules(bench_pkg.__path__):
        if info.name.startswith("_") or info.name == "cli":
            continue
        modules[info.name] = importlib.import_module(f"rlm_rs.bench.{info.name}")
    return modules


def _print_table(result: dict[str, Any], indent: str = "") -> None:
    for key, value in result.items():
        if isinstance(value, dict):
            print(f"{indent}{key}:")
            _print_table(value, indent + "  ")
        elif isinstance(value, float):
            print(f"{indent}{key}: {value:.4g}")
        else:
            print(f"{indent}{key}: {value}")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("bench", help="run a benchmark and print its numbers")
    names = parser.add_subparsers(dest="bench", required=True, metavar="NAME")
    for name, module in sorted(_bench_modules().items()):
        sub = names.add_parser(name, help=module.DESCRIPTION)
        sub.add_argument("--json", action="store_true", help="print one JSON object")
        module.add_arguments(sub)
        sub.set_defaults(func=_runner(module))


def _runner(module: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        result = module.run(args)
        if args.json:
            print(json.dumps(result, indent=2, sort_keys=True))
        elif hasattr(module, "render"):  # a bench that prints its own table
            print(module.render(result))
        else:
            _print_table(result)
        return 0

    return run
