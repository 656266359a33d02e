"""The `rlm-rs` grammar: every argument has help text, long-running processes are
`NOUN VERB`, the control plane's gRPC address is one flag everywhere, old
spellings still parse (hidden from help), and `--version` answers."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from rlm_rs.cli import build_parser, version

# Old spellings kept for one release: accepted, never shown in help.
HIDDEN_COMMANDS = {("rlm-rs", "server")}
OLD_FLAGS = {"--grpc-target", "--target"}


def walk(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ("rlm-rs",)
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, (*path, name))


def visible_commands(parser: argparse.ArgumentParser) -> set[str]:
    listed = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            listed |= {choice.dest for choice in action._choices_actions}
    return listed


def everything() -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    return list(walk(build_parser([])))


def test_every_argument_has_help() -> None:
    missing = [
        f"{' '.join(path)} {action.option_strings or action.dest}"
        for path, parser in everything()
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction | argparse._VersionAction)
        and not (isinstance(action, argparse._SubParsersAction))
        and not action.help
    ]
    assert missing == []


def test_every_command_but_the_old_spellings_has_help() -> None:
    for path, parser in everything():
        for action in parser._actions:
            if not isinstance(action, argparse._SubParsersAction):
                continue
            shown = visible_commands(parser)
            for name in action.choices:
                if (*path, name) in HIDDEN_COMMANDS:
                    assert name not in shown, name
                else:
                    assert name in shown, (*path, name)


@pytest.mark.parametrize(
    "command", [("sandbox", "serve"), ("control", "serve"), ("ingest", "worker"), ("gateway", "serve")]
)
def test_long_running_processes_are_noun_verb(command: tuple[str, str]) -> None:
    args = build_parser(list(command)).parse_args(list(command))
    assert callable(args.func)


def test_the_grpc_address_is_one_flag_everywhere() -> None:
    """Each command that talks to (or is) the control plane takes --grpc-address
    into args.grpc_address; no visible flag spells it any other way."""
    with_flag = []
    for path, parser in everything():
        for action in parser._actions:
            if action.dest == "grpc_address" and action.help != argparse.SUPPRESS:
                assert action.option_strings == ["--grpc-address"], path
                with_flag.append(" ".join(path))
            if set(action.option_strings) & OLD_FLAGS:
                assert action.help == argparse.SUPPRESS, (path, action.option_strings)
    for expected in ("control serve", "gateway serve", "executions tail", "grpc call", "grpc list"):
        assert f"rlm-rs {expected}" in with_flag, expected


@pytest.mark.parametrize(
    ("argv", "address"),
    [
        (["server", "--grpc-address", "h:1"], "h:1"),
        (["gateway", "serve", "--grpc-target", "h:2"], "h:2"),
        (["executions", "tail", "e", "--grpc-target", "h:3"], "h:3"),
        (["grpc", "list", "--target", "h:4"], "h:4"),
        (["grpc", "call", "M/N", "--grpc-address", "h:5"], "h:5"),
    ],
)
def test_old_spellings_still_parse(argv: list[str], address: str) -> None:
    assert build_parser(argv).parse_args(argv).grpc_address == address


def test_server_is_control_serve() -> None:
    old = build_parser(["server"]).parse_args(["server", "--lease-seconds", "7"])
    new = build_parser(["control"]).parse_args(["control", "serve", "--lease-seconds", "7"])
    assert old.func is new.func and old.lease_seconds == new.lease_seconds == 7
    assert old.deprecated == "rlm-rs server" and not getattr(new, "deprecated", None)


def run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rlm_rs.cli", *argv],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip


def test_version() -> None:
    done = run("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"rlm-rs {version()}"
    assert version() != "unknown"


def test_help_shows_the_new_grammar_only() -> None:
    top = run("--help").stdout
    listed = {line.split()[0] for line in top.splitlines() if line.startswith("    ") and line.strip()}
    assert "control" in listed and "server" not in listed
    serve = run("gateway", "serve", "--help").stdout
    assert "--grpc-address" in serve and "--grpc-target" not in serve


def test_the_old_server_spelling_starts_the_control_plane_and_says_it_is_deprecated(tmp_path: object) -> None:
    """A real process: `rlm-rs server` runs the control plane's start-up, which
    here refuses (no sandbox pool), after logging the deprecation."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RLM_", "LAMBDA_"))}
    env["RLM_DATA_DIR"] = str(tmp_path)
    done = run("server", "--grpc-address", "127.0.0.1:0", env=env)
    events = [json.loads(line).get("event") for line in done.stderr.splitlines() if line.startswith("{")]
    assert done.returncode == 1, done.stderr[-2000:]
    assert events.index("deprecated_command") < events.index("control_plane_refused")
