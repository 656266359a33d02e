"""The `rlm-rs` command line: a thin dispatcher over per-component commands.

Each command group lives beside its component and exposes
`register(subparsers)`, which adds its parser and sets `func(args) -> int`.
This module only wires them up and holds the grammar they share; it must not
hold component logic. Bad usage exits 2 (argparse); a command's own failures
exit 1 with a one-line message.

Grammar: `rlm-rs NOUN VERB` for every long-running process (`sandbox serve`,
`control serve`, `ingest worker`, `parser serve`, `gateway serve`, `mcp
serve`); every argument has help text; the control plane's gRPC address is
`--grpc-address` wherever a command needs it (RLM_GRPC_ADDRESS by default).
Old spellings (`rlm-rs server`, `--grpc-target`, `--target`) still work for
one release, hidden from help.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from importlib import metadata

# command group -> module with register(subparsers). Imported lazily so a
# command pays only for its own imports (the sandbox zygote stays small).
COMMAND_MODULES: dict[str, str] = {
    "sandbox": "rlm_rs.sandbox.cli",
    "storage": "rlm_rs.storage.cli",
    "upload": "rlm_rs.storage.cli",
    "keys": "rlm_rs.storage.cli",
    "ingest": "rlm_rs.ingestion.cli",
    "parser": "rlm_rs.ingestion.cli",
    "control": "rlm_rs.control.cli",
    "server": "rlm_rs.control.cli",  # the old spelling of `control serve`, hidden
    "executions": "rlm_rs.control.cli",
    "gateway": "gateway.cli",
    "mcp": "gateway.cli",
    "up": "rlm_rs.appliance.cli",
    "demo": "rlm_rs.appliance.cli",
    "bench": "rlm_rs.bench.cli",
    "grpc": "rlm_rs.grpc_client.cli",
}


def add_grpc_address(parser: argparse.ArgumentParser, help: str, *old: str) -> None:
    """The one flag for the control plane's gRPC address (`args.grpc_address`);
    `old` spellings are accepted, hidden from help."""
    parser.add_argument("--grpc-address", metavar="HOST:PORT", help=f"{help} (default RLM_GRPC_ADDRESS)")
    for flag in old:
        parser.add_argument(flag, dest="grpc_address", help=argparse.SUPPRESS)


def version() -> str:
    try:
        return metadata.version("rlm-rs")
    except metadata.PackageNotFoundError:  # run from a tree that is not installed
        return "unknown"


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlm-rs", description="RLM-RS appliance")
    parser.add_argument(
        "--version", action="version", version=f"rlm-rs {version()}", help="print the version"
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if list(argv[:1]) == ["--version"]:
        return parser  # answered before any command module is imported
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
