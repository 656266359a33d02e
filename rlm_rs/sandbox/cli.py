"""`rlm-rs sandbox ...`: run one step from the command line; pool commands.

`sandbox run` builds a StepRequest from files, runs it (through a temporary
hardened pool by default; with --in-process, development mode, without the
pool in a forked child killed at max_step_seconds) and prints the
StepResult as one JSON object. It exits 0 whether or not the step succeeded;
2 for bad usage. `sandbox serve` and `sandbox doctor` come from
rlm_rs/sandbox/pool/cli.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from rlm_rs.canonical import build_offsets, canonicalize_text
from rlm_rs.sandbox.policy import default_step_limits
from rlm_rs.sandbox.v1.sandbox_pb2 import ContextDocument, SandboxPolicy, StepRequest, StepResult

SANDBOX_COMMANDS: Any = None


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    global SANDBOX_COMMANDS
    parser = subparsers.add_parser("sandbox", help="run steps; serve and inspect the pool")
    SANDBOX_COMMANDS = parser.add_subparsers(dest="sandbox_command", required=True)
    run = SANDBOX_COMMANDS.add_parser("run", help="run one step and print its StepResult as JSON")
    run.add_argument("--code", required=True, help="a file with the step's code, or - for stdin")
    run.add_argument("--doc", action="append", default=[], help="a plain-text document (repeat)")
    run.add_argument("--meta-dir", help="directory with <doc file name>.meta.json files")
    run.add_argument("--state", default="{}", help="the input state as a JSON object")
    run.add_argument(
        "--limits",
        default="{}",
        help="StepLimits fields as a JSON object",
    )
    run.add_argument("--repl-block", action="store_true", help="require one ```repl block")
    run.add_argument("--in-process", action="store_true", help="skip the pool (development: no OS isolation)")
    run.set_defaults(func=_run)
    try:
        from rlm_rs.sandbox.pool.cli import register_into
    except ModuleNotFoundError:
        return
    register_into(SANDBOX_COMMANDS)


def _usage(message: str) -> int:
    print(f"rlm-rs sandbox run: {message}", file=sys.stderr)
    return 2


def build_request(args: argparse.Namespace, workdir: Path) -> StepRequest:
    """The StepRequest for `sandbox run`; plain-text docs are canonicalised into workdir."""
    code = sys.stdin.read() if args.code == "-" else Path(args.code).read_text(encoding="utf-8")
    state = json.loads(args.state)
    if not isinstance(state, dict):
        raise ValueError("--state must be a JSON object")
    limits = default_step_limits()
    json_format.ParseDict(json.loads(args.limits), limits)
    request = StepRequest(
        code=code,
        state_json=json.dumps(state),
        limits=limits,
        require_repl_block=args.repl_block,
        session_id="cli",
        execution_id="cli",
    )
    for index, doc_path in enumerate(args.doc):
        source = Path(doc_path)
        text = canonicalize_text(source.read_bytes().decode("utf-8"))
        text_path = workdir / f"doc{index}.txt"
        offsets_path = workdir / f"doc{index}.offsets.json"
        text_path.write_text(text, encoding="utf-8", newline="")
        offsets = build_offsets(text, doc_id=f"doc{index}")
        offsets_path.write_text(json.dumps(offsets), encoding="utf-8")
        meta_path = ""
        if args.meta_dir:
            candidate = Path(args.meta_dir) / f"{source.name}.meta.json"
            meta_path = str(candidate) if candidate.exists() else ""
        request.context_manifest.append(
            ContextDocument(
                doc_index=index,
                doc_id=f"doc{index}",
                source_name=source.name,
                mime_type="text/plain",
                char_length=len(text),
                byte_length=offsets["byte_length"],
                text_path=str(text_path),
                offsets_path=str(offsets_path),
                meta_path=meta_path,
            )
        )
    return request


def _execute(request: StepRequest, in_process: bool) -> StepResult:
    runner: Callable[[StepRequest], StepResult]
    if in_process:
        from rlm_rs.sandbox._killable import run_step_killable

        return run_step_killable(request)
    from rlm_rs.sandbox.client import PoolSandbox, temporary_pool
    from rlm_rs.settings import get_settings

    socket_path = get_settings().sandbox_socket
    if socket_path:  # a configured pool (LAMBDA_FUNCTION_NAME); else a temporary one
        configured = PoolSandbox(socket_path)
        try:
            return configured.run_step(request)
        finally:
            configured.close()
    with temporary_pool() as pool:
        runner = pool.run_step
        return runner(request)


def result_to_json(result: StepResult) -> dict[str, Any]:
    """A StepResult as the spec's JSON shape, with state as a real object."""
    data = json_format.MessageToDict(
        result, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    data["state"] = json.loads(data.pop("state_json") or "{}")
    error: dict[str, Any] = data.get("error") or {}
    if result.HasField("error"):
        error["details"] = json.loads(error.pop("details_json") or "{}")
    else:
        data["error"] = None
    data.setdefault("tool_requests", {"llm": [], "search": []})
    if not result.final.is_final:
        data["final"] = None
    for request in data["tool_requests"].get("llm", []):
        request["metadata"] = json.loads(request.pop("metadata_json") or "null")
    for span in data.get("span_log", []):
        span["start_char"], span["end_char"] = int(span["start_char"]), int(span["end_char"])
    data["instructions_executed"] = int(data.get("instructions_executed", 0))
    return data


def _run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="rlm-step-") as workdir:
        try:
            request = build_request(args, Path(workdir))
        except (OSError, ValueError, json_format.ParseError) as exc:
            return _usage(str(exc))
        result = _execute(request, args.in_process)
    print(json.dumps(result_to_json(result), ensure_ascii=False))
    return 0


__all__ = ["SANDBOX_COMMANDS", "SandboxPolicy", "build_request", "register", "result_to_json"]
