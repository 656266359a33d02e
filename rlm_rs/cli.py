"""The `rlm-rs` command line: a thin dispatcher over per-component commands.

Each command group lives beside its component and exposes
`register(subparsers)`, which adds its parser and sets `func(args) -> int`.
This module only wires them up; it must not hold component logic. Bad usage
exits 2 (argparse); a command's own failures exit 1 with a one-line message.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# command group -> module with register(subparsers). Imported lazily so a
# command pays only for its own imports (the sandbox zygote stays small).
COMMAND_MODULES: dict[str, str] = {
    "sandbox": "rlm_rs.sandbox.cli",
    "storage": "rlm_rs.storage.cli",
    "upload": "rlm_rs.storage.cli",
    "keys": "rlm_rs.storage.cli",
    "ingest": "rlm_rs.ingestion.cli",
    "parser": "rlm_rs.ingestion.cli",
    "server": "rlm_rs.control.cli",
    "executions": "rlm_rs.control.cli",
    "gateway": "gateway.cli",
    "mcp": "gateway.cli",
    "up": "rlm_rs.appliance.cli",
    "demo": "rlm_rs.appliance.cli",
    "bench": "rlm_rs.bench.cli",
    "grpc": "rlm_rs.grpc_client.cli",
}


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlm-rs", description="RLM-RS appliance")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = next((a for a in argv if not a.startswith("-")), None)
    loaded: set[str] = set()
    for command, module_name in COMMAND_MODULES.items():
        # Load only the module for the requested command; for --help, all.
        if wanted is not None and wanted in COMMAND_MODULES and command != wanted:
            continue
        if module_name in loaded:
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # component not built yet
            raise
        module.register(subparsers)
        loaded.add(module_name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(args_list)
    args = parser.parse_args(args_list)
    result = args.func(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
