"""The step executor: one step of model-written Python -> a StepResult.

Threat model: the code is hostile. It may try to escape through the object
graph, frames, format strings or exceptions; to read files or the network; to
exhaust CPU, memory, output or the span budget; or to forge orchestrator
state. This module is the *policy* half of the defence, and it is pure: a
StepRequest in, a StepResult out, nothing raised, nothing persisted.

Layers, in order (each rejection names its layer in error.details.layer):
  1. reply format (Answerer mode): the ```repl/```python blocks  (_replies)
  2. AST policy: the spec's minimum and more              (_ast_policy)
  3. RestrictedPython compile + guards for attribute, item, iteration,
     writes, in-place operators and print; our builtins      (_restricted)
  4. budgets inside the step: executed statements and iterations
     (SANDBOX_LINE_LIMIT), the wall clock (STEP_TIMEOUT: read every 4096
     ticks, and in-process a watchdog thread stops the step at the next tick
     after its deadline; the pool kills from outside), stdout truncation,
     spans and tool requests per step (BUDGET_EXCEEDED), state type and size
     (STATE_INVALID_TYPE / STATE_TOO_LARGE)                      (_runtime)
     No single value grows past the size bounds (_sizes: every method and
     operator of the builtin types is enumerated there) and the C-level
     operations with no size to bound run in bounded time (`x in range(...)`
     for any x, pow with a modulus, budgeted JSON walks); TOTAL memory is not
     bounded here (layer 5's cgroup and RLIMIT_AS are the bound).

In-process mode (this function called in the caller's process, no pool) is
for development only: a single C-level operation that is neither sized nor
ticked (comparing or hashing two deep shared-reference structures) can still
run past max_step_seconds, and nothing in a process can interrupt it. The
pool's SIGKILL is the bound there; the Lambda handler runs each step in a
forked child it kills (rlm_rs/sandbox/_killable.py), and the control plane
refuses to run steps in-process unless RLM_DEV_UNSANDBOXED=1
(rlm_rs/sandbox/client.py). docs/sandbox-executor.md, "In-process mode".
  5. OS isolation: NOT here. rlm_rs/sandbox/pool/ runs this function inside a
     fresh, namespaced, rlimited, seccomp-locked process per step.
A failed step returns the input state unchanged, queues no tool request, and
reports stdout and spans read so far (for debugging; callers cite only
successful steps). Writes to reserved "_" state keys are discarded.

Rejected alternatives: sys.settrace line counting (5-10x slower on every
line; also visible to and disableable by nothing here, but the AST-inserted
tick is cheaper and cannot be caught); in-process SIGALRM timeouts (C loops
ignore signals: measured 35 s overrun); exposing stdlib modules such as re or
json (their module graphs reach os and open: `json.codecs.open`): the step's
`re` and `json` are bounded wrappers instead (_step_re.py, _step_json.py).
"""

from __future__ import annotations

import builtins as _py_builtins
import json
import time
from collections.abc import Iterator, Sequence
from typing import Any

import regex

from rlm_rs.errors import RlmError
from rlm_rs.sandbox import _sizes, _watchdog
from rlm_rs.sandbox._ast_policy import parse_and_check
from rlm_rs.sandbox._docview import ContextView, DocView, OpenDocument
from rlm_rs.sandbox._inline import Channel, InlineCalls
from rlm_rs.sandbox._replies import code_from_submission
from rlm_rs.sandbox._restricted import Guards, compile_step
from rlm_rs.sandbox._runtime import FinalStop, StepRuntime, StepStop, YieldStop
from rlm_rs.sandbox._state import finish_state
from rlm_rs.sandbox._step_json import StepJson
from rlm_rs.sandbox._step_re import StepRe
from rlm_rs.sandbox._tools import ToolAPI, queued_requests
from rlm_rs.sandbox.policy import with_defaults
from rlm_rs.sandbox.v1.sandbox_pb2 import ContextDocument, StepLimits, StepRequest, StepResult
from rlm_rs.textfile import TextFile, read_fd
from rlm_rs.v1.common_pb2 import ErrorDetail, Final, Span

__all__ = ["run_step", "warm_up"]

_MAX_ERROR_MESSAGE_CHARS = 2_000
# A root reply may carry prose and fences around its code (rlm_rs/sandbox/_replies.py);
# the code itself is held to max_code_chars once it is extracted.
_REPLY_ALLOWANCE_CHARS = 20_000


def run_step(
    request: StepRequest,
    fds: Sequence[int] | None = None,
    *,
    allow_unsafe: bool = False,
    watchdog: bool = True,
    inline: Channel | None = None,
) -> StepResult:
    """Run one step. Never raises; every failure is in StepResult.error.

    fds None: open the manifest's paths (in-process mode). fds given (pool
    worker): per document in manifest order its text fd, then its offsets fd
    if offsets_path is set, then its meta fd if meta_path is set; no path is
    opened. `allow_unsafe` lets request.unsafe_disable_policy_layers switch
    layers 2-3 off (test-only, to prove the OS layers hold alone).
    `watchdog` arms the shared watchdog thread (_watchdog.py); pool workers
    and the zygote pass False (they must never start a thread).
    `inline` is the channel of the step's inline calls (_inline.py): None
    makes llm_query and its siblings fail with a RuntimeError.
    """
    started = time.perf_counter()
    result = StepResult(
        turn_index=request.turn_index,
        isolation="in-process",
        state_json=request.state_json or "{}",
    )
    documents: list[OpenDocument] = []
    try:
        documents = _execute(request, fds, allow_unsafe, result, watchdog, inline)
    except RlmError as exc:
        _fail(result, exc.code, exc.message, exc.details)
    except BaseException as exc:  # the executor itself must always answer
        _fail(result, "INTERNAL_ERROR", f"step executor failed: {type(exc).__name__}", {})
    finally:
        for doc in documents:
            doc.text.close()
        result.duration_ms = (time.perf_counter() - started) * 1000
    return result


def _execute(
    request: StepRequest,
    fds: Sequence[int] | None,
    allow_unsafe: bool,
    result: StepResult,
    watchdog: bool,
    inline: Channel | None = None,
) -> list[OpenDocument]:
    policy = with_defaults(request.limits if request.HasField("limits") else None)
    input_state = _parse_state(request.state_json)
    unsafe = request.unsafe_disable_policy_layers
    bytecode = _compile(request, policy, unsafe and allow_unsafe)
    documents = _open_documents(request.context_manifest, fds)
    runtime = StepRuntime(
        max_instructions=policy.max_instructions,
        max_seconds=policy.max_step_seconds,
        max_stdout_chars=policy.max_stdout_chars,
        max_spans=policy.max_spans_per_step,
    )
    tool = ToolAPI(
        runtime,
        max_requests=policy.max_tool_requests_per_step,
        max_prompt_chars=policy.max_llm_prompt_chars,
        llm_enabled=policy.enable_llm,
        rlm_enabled=policy.enable_rlm,
        search_enabled=policy.enable_search,
        max_answer_chars=policy.max_state_chars,
    )
    step_globals = _step_globals(policy, runtime, tool, documents, inline, result.state_json, unsafe)
    outcome, failure = _run_code(bytecode, step_globals, runtime, watchdog)

    result.stdout = runtime.stdout()
    result.stdout_truncated = runtime.stdout_truncated
    result.instructions_executed = runtime.instructions
    result.span_log.extend(Span(doc_index=d, start_char=s, end_char=e, tag=t) for d, s, e, t in runtime.spans)
    if outcome is not None and outcome.code:
        raise RlmError(outcome.code, outcome.message, {**outcome.details, "layer": "budget"})
    if failure is not None and outcome is None:
        _fail_with_exception(result, failure)
        return documents

    state_json = finish_state(step_globals.get("state"), input_state, policy.max_state_chars)
    result.state_json = state_json
    result.tool_requests.CopyFrom(queued_requests(tool))
    if isinstance(outcome, FinalStop):
        result.final.CopyFrom(Final(is_final=True, answer=outcome.answer))
    elif isinstance(outcome, YieldStop):
        result.yield_reason = outcome.reason or "yield"
    result.success = True
    return documents


def _compile(request: StepRequest, policy: StepLimits, unsafe: bool) -> Any:
    """Layers 1-3: size, reply format, AST policy, RestrictedPython -> bytecode."""
    if len(request.code) > policy.max_code_chars + _REPLY_ALLOWANCE_CHARS:
        raise RlmError(  # before even the reply parser looks at it
            "SANDBOX_AST_REJECTED",
            f"code is {len(request.code)} chars; the limit is {policy.max_code_chars}",
            {"line": 0, "layer": "ast_policy", "max_code_chars": policy.max_code_chars},
        )
    code = code_from_submission(request.code, require_block=request.require_repl_block)
    if request.unsafe_disable_policy_layers and not unsafe:
        raise RlmError("VALIDATION_ERROR", "unsafe_disable_policy_layers is refused outside test mode")
    if unsafe:
        return _compile_unrestricted(code, policy.max_code_chars)
    return compile_step(parse_and_check(code, policy.max_code_chars))


def _step_globals(
    policy: StepLimits,
    runtime: StepRuntime,
    tool: ToolAPI,
    documents: list[OpenDocument],
    inline: Channel | None,
    state_json: str,
    unsafe: bool,
) -> dict[str, Any]:
    """The names a step sees: guarded builtins, context, state, tool, inline calls, re, json."""
    calls = InlineCalls(
        runtime,
        inline,
        max_calls=policy.max_inline_calls_per_step,
        max_wait_seconds=policy.max_step_wait_seconds,
        max_prompt_chars=policy.max_llm_prompt_chars,
        llm_enabled=policy.enable_llm,
        rlm_enabled=policy.enable_rlm,
    )
    context = ContextView(
        [DocView(d, runtime, policy.max_hits_per_call, policy.max_regex_seconds) for d in documents]
    )
    step_globals = (
        _unrestricted_globals(runtime) if unsafe else Guards(runtime).globals(policy.builtins_allowlist)
    )
    code_state = json.loads(state_json)
    # What this step may queue, for the code to read; reserved, so it is
    # dropped from the state the step leaves behind (never persisted).
    code_state["_tool_schema"] = tool.schema()
    step_globals.update(
        context=context,
        state=code_state,
        tool=tool,
        llm_query=calls.llm_query,
        llm_query_batched=calls.llm_query_batched,
        rlm_query=calls.rlm_query,
    )
    step_globals.update(re=StepRe(runtime, policy.max_regex_seconds), json=StepJson(runtime))
    return step_globals


def _run_code(
    bytecode: Any, step_globals: dict[str, Any], runtime: StepRuntime, watchdog: bool
) -> tuple[StepStop | None, BaseException | None]:
    """Execute the step: (the stop that ended it, or the exception it raised)."""
    outcome: StepStop | None = None
    failure: BaseException | None = None
    alarm = _watchdog.arm(runtime.deadline, runtime) if watchdog else None
    try:
        exec(bytecode, step_globals)
    except StepStop as stop:
        outcome = stop
    except BaseException as exc:
        failure = exc
    finally:
        runtime.finish()
        if alarm is not None:
            _watchdog.disarm(alarm)
    return runtime.stop or outcome, failure  # a swallowed stop still counts


def _parse_state(state_json: str) -> dict[str, Any]:
    try:
        state = json.loads(state_json or "{}")
    except (ValueError, RecursionError):
        raise RlmError("STATE_INVALID_TYPE", "state is not valid JSON") from None
    if type(state) is not dict:
        raise RlmError("STATE_INVALID_TYPE", "state must be a JSON object")
    return state


def _open_documents(manifest: Sequence[ContextDocument], fds: Sequence[int] | None) -> list[OpenDocument]:
    documents: list[OpenDocument] = []
    fd_iter: Iterator[int] | None = iter(fds) if fds is not None else None
    try:
        for entry in manifest:
            if fd_iter is None:
                text = TextFile.open_path(entry.text_path, entry.offsets_path or None)
                meta = _load_meta_path(entry.meta_path)
            else:
                text_fd = next(fd_iter)
                offsets_fd = next(fd_iter) if entry.offsets_path else None
                meta_fd = next(fd_iter) if entry.meta_path else None
                text = TextFile.from_fds(text_fd, offsets_fd)
                meta = json.loads(read_fd(meta_fd)) if meta_fd is not None else {}
            documents.append(
                OpenDocument(
                    doc_index=entry.doc_index,
                    doc_id=entry.doc_id,
                    source_name=entry.source_name,
                    mime_type=entry.mime_type,
                    text=text,
                    meta=meta if isinstance(meta, dict) else {},
                )
            )
    except (OSError, ValueError, KeyError, StopIteration) as exc:
        for doc in documents:
            doc.text.close()
        raise RlmError(
            "S3_READ_ERROR",
            f"document {len(documents)} of the context could not be read",
            {"doc_index": len(documents), "reason": type(exc).__name__},
        ) from None
    return documents


def _load_meta_path(path: str) -> Any:
    if not path:
        return {}
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _compile_unrestricted(code: str, max_code_chars: int) -> Any:
    if len(code) > max_code_chars:
        raise RlmError("SANDBOX_AST_REJECTED", "code too long", {"layer": "ast_policy"})
    try:
        return compile(code, "<step>", "exec")
    except SyntaxError as exc:
        raise RlmError("SANDBOX_AST_REJECTED", f"syntax error: {exc.msg}") from None


def _unrestricted_globals(runtime: StepRuntime) -> dict[str, Any]:
    """Test-only: full builtins (print captured). The OS layers must hold alone."""
    full = dict(vars(_py_builtins))

    def captured_print(*objects: Any, sep: str = " ", end: str = "\n", **_: Any) -> None:
        runtime.write(sep.join(str(o) for o in objects) + end)

    full["print"] = captured_print
    return {"__builtins__": full, "__name__": "step"}


def _fail(result: StepResult, code: str, message: str, details: dict[str, Any]) -> None:
    result.success = False
    result.ClearField("tool_requests")
    result.ClearField("final")
    result.error.CopyFrom(
        ErrorDetail(
            code=code,
            message=message[:_MAX_ERROR_MESSAGE_CHARS],
            details_json=json.dumps(details, sort_keys=True, default=str),
        )
    )


def _fail_with_exception(result: StepResult, exc: BaseException) -> None:
    line = 0
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<step>":
            line = tb.tb_lineno
        tb = tb.tb_next
    if isinstance(exc, RlmError):
        _fail(result, exc.code, exc.message, {**exc.details, "line": line})
        return
    name = type(exc).__name__
    try:
        text = _exception_text(exc)
    except BaseException:  # a hostile __str__ must not take the executor down
        text = ""
    where = f" (line {line})" if line else ""
    _fail(
        result,
        "SANDBOX_RUNTIME_ERROR",
        f"{name}: {text[:_MAX_ERROR_MESSAGE_CHARS]}{where}",
        {"exception": name, "line": line},
    )


def _exception_text(exc: BaseException) -> str:
    """str(exc) when its text is small: `raise ValueError(bomb)` must not make
    the executor build a huge message (the walk is capped, not ticked)."""
    visited = [0]

    def count() -> None:
        visited[0] += 1
        if visited[0] > 100_000:
            raise MemoryError

    try:
        size = _sizes.TextSizer(count, limit=1_000_000).str_size(exc)
    except MemoryError:
        return "<message too large>"
    return str(exc) if size <= 1_000_000 else "<message too large>"


_WARM_CODE = """
notes = []
for i, word in enumerate(sorted(["b", "a"], key=lambda w: w)):
    notes.append(f"{i}:{word!r}")
try:
    {}["missing"]
except KeyError as exc:
    notes.append(str(exc.args))
print(" ".join(notes), sum(x * 2 for x in range(3)), max([1, 2]), len(context))
print(f"{1.5:>6.2f}|{'x'!r:^5}|{[1]}", "%5.1f|%-3s" % (2.0, "é"), "%(k)s" % {"k": [1]},
      "a".ljust(3), dict({"k": 1}), {**{"a": 1}}, 2 in range(3), str([1]), repr((1,)))
x = [1, 2]
x[0:1] = [3]
x += (4,)
words = "a b".split() + ["c"] * 2
found = re.findall(r"(\\w)(\\d)?", re.sub("b", lambda m: m.group(0).upper(), "a1 b2"))
parts = re.split(r"\\s+", json.dumps(json.loads('{"k": [1, "x"]}'), indent=1, sort_keys=True))
state["warm"] = {"ok": True, "n": 1.5}
tool.YIELD("warm")
"""


def warm_up() -> None:
    """Pre-import and exercise everything a step can touch, so a worker locked
    by seccomp never imports lazily or opens a file. Idempotent."""
    import encodings.idna
    import encodings.utf_8  # noqa: F401
    import unicodedata

    unicodedata.normalize("NFC", "cafe\u0301")
    regex.compile(r"(?i)\b\w+\s*(\d+)").findall("Warm 42 up", timeout=1.0)
    b"x".decode("utf-8")
    result = run_step(StepRequest(code=_WARM_CODE, state_json="{}"), watchdog=False)
    if not result.success:
        raise RuntimeError(f"executor warm-up failed: {result.error.message}")
