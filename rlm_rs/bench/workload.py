"""`rlm-rs bench workload`: RLM tasks that fan out, on RLM-RS and on `rlms`.

Seeded corpora: needles in 1/10/50 MB (find + regex), aggregation over
1,000 and 5,000 records (50 records per batched sub-call), a depth-2 variant
(5 child RLMs over 5,000 records) and an edge of 5,000 one-record sub-calls.
Both systems talk to one local OpenAI-compatible server
(rlm_rs/providers/testing_server.py) in this process, and each runs in
processes of its own: its root model is scripted (it returns the task's code
for the turn asked), its sub-model is rule-based (it counts complaint
records), with --root-latency/--sub-latency. RLM-RS runs a real control
plane (`rlm-rs control serve`: gRPC, embedded storage, the hardened pool
unless --sandbox in-process). `rlms` (PyPI, the paper's library, LocalREPL,
pinned to RLMS_VERSION) runs the same tasks in a throwaway venv in the same
run (--rlms auto makes one with uv) and each row prints the ratio; where it
cannot be installed the table says so. Every cell is checked against the
corpus's true answer.
Must never be used as a deployment: it lifts tenant limits.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlm_rs.bench._limits import UNLIMITED_QUOTAS, UNLIMITED_RATE

DESCRIPTION = "RLM workloads that fan out (needle, aggregation, depth 2, 5,000 sub-calls), RLM-RS vs rlms"

ROOT_MODEL, SUB_MODEL, CHILD_MODEL = "root-model", "sub-model", "child-model"
RECORDS_PER_CALL = 50
CHILDREN = 5
_COMPLAINT_WORDS = ("refund", "broken")
_WORDS = (
    "order", "shipped", "arrived", "quickly", "thanks", "great", "service", "package", "box",
    "delivery", "team", "support", "happy", "item", "colour", "size", "fits", "perfect", "again",
    "later", "today", "friendly", "price", "fair", "store", "online",
)  # fmt: skip
_NEEDLE_CODE = "QX-4821-ZK"
_TASK_RE = re.compile(r"\[task ([\w.-]+)\]")


# --- corpora ----------------------------------------------------------------------------------
def needle_corpus(megabytes: float, seed: int) -> str:
    """Filler lines (lowercase words) with one line naming the access code."""
    rng = random.Random(seed)
    lines = [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(6, 14))) for _ in range(2_000)]
    block = "\n".join(lines) + "\n"
    size = max(int(megabytes * 1_000_000), 1_000)
    text = block * (size // len(block) + 1)
    text = text[: text.rfind("\n", 0, size) + 1]
    at = text.find("\n", rng.randrange(len(text) // 4, 3 * len(text) // 4)) + 1
    return text[:at] + f"note: the access code is {_NEEDLE_CODE} for the vault.\n" + text[at:]


def records_corpus(count: int, seed: int, first: int = 0) -> tuple[str, int]:
    """`id | date | user | text` lines and how many of them are complaints."""
    rng = random.Random(seed)
    lines, complaints = [], 0
    for number in range(first, first + count):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(5, 9))]
        if rng.random() < 0.2:
            words.insert(rng.randrange(len(words)), rng.choice(_COMPLAINT_WORDS))
            complaints += 1
        date = f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        lines.append(f"rec-{number:05d} | {date} | user{rng.randint(1, 400):03d} | {' '.join(words)}")
    return "\n".join(lines) + "\n", complaints


def count_complaints(prompt: str) -> int:
    """The rule-based sub-model: complaint records among the prompt's record lines."""
    return sum(
        1 for line in prompt.split("\n") if " | " in line and any(w in line.split() for w in _COMPLAINT_WORDS)
    )


# --- the root model's scripts ----------------------------------------------------------------
def _header(task: str) -> str:
    # The task in the header keeps the sub-call cache from answering one task from another.
    return f'Count the complaints in these records ({task}). Answer as JSON {{"complaints": n}}.'


def _block(code: str) -> str:
    return f"I will run this step.\n```repl\n{code.strip()}\n```"


INSPECT_RLM_RS = "print(len(context), [len(d) for d in context][:5], context[0][:120])"
INSPECT_RLMS = "print(len(context), context[:120])"


def rlm_rs_aggregate(task: str, per: int) -> str:
    """One adaptive step, the same every turn: batch what the caps allow
    (read from tool.schema()), add up the answers that arrived, FINAL when
    all are in. Uses inline `llm_query_batched` where the step API has it."""
    return f"""
doc = context[0]
records = [line for line in doc[0:len(doc)].split("\\n") if line]
per = {per}
prompts = [{_header(task)!r} + "\\n" + "\\n".join(records[i:i + per]) for i in range(0, len(records), per)]
try:
    inline = llm_query_batched
except NameError:
    inline = None
if inline is not None:
    answers = []
    for i in range(0, len(prompts), 100):
        answers += inline(prompts[i:i + 100])
    failed = [a for a in answers if not a.startswith("{{")]
    if failed:
        raise ValueError(f"{{len(failed)}} sub-calls failed, first: {{failed[0][:300]}}")
    tool.FINAL(str(sum(json.loads(a)["complaints"] for a in answers)))
w = state["work"]
seen = w.setdefault("seen", [])
total = w.get("total", 0)
for key, result in state.get("_tool_results", {{}}).get("llm_batch", {{}}).items():
    if key not in seen:
        total += sum(json.loads(r["text"])["complaints"] for r in result["results"])
        seen.append(key)
w["total"] = total
start, batches = w.get("next", 0), w.get("batches", 0)
if start >= len(prompts) and len(seen) == batches:
    tool.FINAL(str(total))
room = tool.schema()["max_requests_per_step"]
while start < len(prompts) and room > 0:
    n = min(100, room, len(prompts) - start)
    tool.queue_llm_batch(f"b{{batches}}", prompts[start:start + n])
    batches, start, room = batches + 1, start + n, room - n
w["next"], w["batches"] = start, batches
tool.YIELD("sub-calls")
"""


def rlms_aggregate(task: str, per: int) -> str:
    return f"""
import json
records = [line for line in context.split("\\n") if line]
per = {per}
prompts = [{_header(task)!r} + "\\n" + "\\n".join(records[i:i + per]) for i in range(0, len(records), per)]
answers = llm_query_batched(prompts)
answer["content"] = str(sum(json.loads(a)["complaints"] for a in answers))
answer["ready"] = True
"""


RLM_RS_NEEDLE = """
doc = context[0]
hit = doc.find("access code is", max_hits=1)[0]
found = doc.regex(r"access code is ([A-Z]{2}-\\d{4}-[A-Z]{2})", start=hit["start_char"],
                  end=hit["start_char"] + 40, max_hits=1)
tool.FINAL(found[0]["groups"][0])
"""
RLMS_NEEDLE = """
import re
at = context.find("access code is")
answer["content"] = re.search(r"access code is ([A-Z]{2}-\\d{4}-[A-Z]{2})", context[at:at + 40]).group(1)
answer["ready"] = True
"""


def rlm_rs_depth2(child_task: str) -> str:
    """Inline `rlm_query` where the step API has it (answers in this step),
    else the queued children and one more turn."""
    return f"""
question = "[task {child_task}] Count the complaints in your records."
try:
    inline = rlm_query
except NameError:
    inline = None
if inline is not None:
    tool.FINAL(str(sum(int(inline(question, doc_indices=[i])) for i in range(len(context)))))
w = state["work"]
if not w.get("queued"):
    for i in range(len(context)):
        tool.queue_rlm(f"part{{i}}", question, doc_indices=[i])
    w["queued"] = True
    tool.YIELD("children")
results = state["_tool_results"]["rlm"]
tool.FINAL(str(sum(int(results[f"part{{i}}"]["text"]) for i in range(len(context)))))
"""


RLMS_DEPTH2 = f"""
parts = [p for p in context.split("\\n=====\\n") if p.strip()]
answers = rlm_query_batched(parts, model="{CHILD_MODEL}")
answer["content"] = str(sum(int(a) for a in answers))
answer["ready"] = True
"""


@dataclass
class Task:
    """One row: its corpus (documents), its truth and each system's script."""

    name: str
    label: str
    documents: list[str]
    truth: str
    rlm_rs_steps: list[str]  # turn by turn; the last repeats
    rlms_steps: list[str]
    child_rlm_rs: list[str] = field(default_factory=list)
    child_rlms: list[str] = field(default_factory=list)
    sub_latency: float | None = None  # None: --sub-latency
    rlms_depth: int = 1


def warmup_task() -> Task:
    """Run once on each system before the rows: first-use costs (SDK imports,
    the first step, connections) are not part of any row."""
    return Task(
        "warmup",
        "warm-up",
        [needle_corpus(0.01, 0)],
        _NEEDLE_CODE,
        [_block(RLM_RS_NEEDLE)],
        [_block(RLMS_NEEDLE)],
    )


def build_tasks(args: argparse.Namespace) -> list[Task]:
    tasks = [_needle_task(megabytes, args.seed + index) for index, megabytes in enumerate(args.needle_mb)]
    tasks += [_aggregate_task(count, args.seed + count) for count in args.records]
    if args.depth2_records:
        tasks.append(_depth2_task(args.depth2_records, args.seed))
    if args.edge_records:
        tasks.append(_edge_task(args.edge_records, args.seed, args.edge_sub_latency))
    return tasks


def _needle_task(megabytes: float, seed: int) -> Task:
    return Task(
        f"needle-{megabytes:g}mb",
        f"needle in {megabytes:g} MB (find + regex)",
        [needle_corpus(megabytes, seed)],
        _NEEDLE_CODE,
        [_block(RLM_RS_NEEDLE)],
        [_block(RLMS_NEEDLE)],
    )


def _aggregate_task(count: int, seed: int) -> Task:
    name = f"aggregate-{count}"
    text, truth = records_corpus(count, seed)
    calls = -(-count // RECORDS_PER_CALL)
    return Task(
        name,
        f"aggregation over {count:,} records, {calls} batched sub-calls",
        [text],
        str(truth),
        [_block(INSPECT_RLM_RS), _block(rlm_rs_aggregate(name, RECORDS_PER_CALL))],
        [_block(INSPECT_RLMS), _block(rlms_aggregate(name, RECORDS_PER_CALL))],
    )


def _depth2_task(records: int, seed: int) -> Task:
    per_child = records // CHILDREN
    parts = [records_corpus(per_child, seed + 7_000 + i, first=i * per_child) for i in range(CHILDREN)]
    truth = sum(c for _, c in parts)
    child = "depth2-child"
    return Task(
        "depth2",
        f"depth 2: {CHILDREN} child RLMs over {records:,} records",
        [p for p, _ in parts],
        str(truth),
        [_block(INSPECT_RLM_RS), _block(rlm_rs_depth2(child))],
        [_block(INSPECT_RLMS), _block(RLMS_DEPTH2)],
        child_rlm_rs=[_block(INSPECT_RLM_RS), _block(rlm_rs_aggregate(child, RECORDS_PER_CALL))],
        child_rlms=[_block(INSPECT_RLMS), _block(rlms_aggregate(child, RECORDS_PER_CALL))],
        rlms_depth=2,
    )


def _edge_task(records: int, seed: int, sub_latency: float) -> Task:
    name = f"edge-{records}"
    text, truth = records_corpus(records, seed + 9_000)
    return Task(
        name,
        f"{records:,} one-record sub-calls, no latency",
        [text],
        str(truth),
        [_block(INSPECT_RLM_RS), _block(rlm_rs_aggregate(name, 1))],
        [_block(INSPECT_RLMS), _block(rlms_aggregate(name, 1))],
        sub_latency=sub_latency,
    )


# --- the fake model server -------------------------------------------------------------------
class FakeModels:
    """Scripted root model, rule-based sub-model; counts calls and peak concurrency."""

    def __init__(self, tasks: list[Task], root_latency: float, sub_latency: float) -> None:
        self.tasks = {task.name: task for task in tasks}
        self.root_latency = root_latency
        self.sub_latency = sub_latency
        self.current: Task | None = None
        self._lock = threading.Lock()
        self.in_flight = self.peak = self.root_calls = self.sub_calls = 0

    def reset(self, task: Task) -> None:
        with self._lock:
            self.current = task
            self.in_flight = self.peak = self.root_calls = self.sub_calls = 0

    def reply(self, model: str, messages: list[dict[str, str]]) -> str:
        if messages and messages[0].get("role") == "system":
            time.sleep(self.root_latency)
            return self._root(model, messages)
        with self._lock:
            self.sub_calls += 1
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            task = self.current
            latency = (
                task.sub_latency if task is not None and task.sub_latency is not None else self.sub_latency
            )
            time.sleep(latency)
            return json.dumps({"complaints": count_complaints(str(messages[-1].get("content", "")))})
        finally:
            with self._lock:
                self.in_flight -= 1

    def _root(self, model: str, messages: list[dict[str, str]]) -> str:
        text = "\n".join(str(m.get("content", "")) for m in messages)
        question = re.search(r"^Question: \[task ([\w.-]+)\]", text, re.M)
        if question:  # RLM-RS: the task is in the question, the turn in the prompt
            name = question.group(1)
            turn = int(re.findall(r"Turn (\d+) of", text)[-1]) - 1
            if name.endswith("-child"):
                steps = self.tasks[name[: -len("-child")]].child_rlm_rs
            else:
                steps = self.tasks[name].rlm_rs_steps
        else:  # rlms: the task is in the system prompt, the turn is the assistant messages so far
            found = _TASK_RE.search(str(messages[0].get("content", "")))
            if found is None:
                return "I cannot tell which task this is."
            task = self.tasks[found.group(1)]
            turn = sum(1 for m in messages if m.get("role") == "assistant")
            name = task.name
            steps = task.child_rlms if model == CHILD_MODEL else task.rlms_steps
        if name != "warmup":  # the warm-up runs before each rlms task, in its process
            with self._lock:
                self.root_calls += 1
        return steps[min(turn, len(steps) - 1)]


# --- RLM-RS ----------------------------------------------------------------------------------
def _status(execution: Any) -> str:
    """The status's name, whether the message carries a string or an enum."""
    value = execution.status
    if isinstance(value, str):
        return value
    enum = execution.DESCRIPTOR.fields_by_name["status"].enum_type
    name = str(enum.values_by_number[value].name)
    return name.removeprefix("EXECUTION_STATUS_")


@dataclass
class Cell:
    seconds: float | None = None
    answer: str = ""
    correct: bool = False
    turns: int = 0
    root_calls: int = 0
    sub_calls: int = 0
    peak_concurrency: int = 0
    error: str = ""


@contextlib.contextmanager
def rlm_rs_stack(base_url: str, directory: Path, sandbox_kind: str) -> Iterator[Callable[[Task], Cell]]:
    """A control plane in its own process (`rlm-rs control serve`, as deployed)
    on loopback, using the fake server; yields run(task).

    Its own process, not a thread of this one: the fake model server runs
    here, and sharing its interpreter lock would charge the server's work to
    RLM-RS (`rlms` runs in its own process too)."""
    import grpc

    from rlm_rs.appliance.supervisor import grpc_serving
    from rlm_rs.bench._plane import free_port
    from rlm_rs.sandbox.client import temporary_pool
    from rlm_rs.settings import Settings
    from rlm_rs.storage import open_storage

    env = {
        "RLM_DATA_DIR": str(directory / "rlm-rs"),
        "API_KEY_PEPPER": "bench",
        "LLM_PROVIDER": "openai",
        "OPENAI_BASE_URL": base_url,
        "OPENAI_API_KEY": "sk-bench",
        "RLM_LLM_MAX_RETRIES": "2",
        "RLM_LLM_TIMEOUT_SECONDS": "120",
        "DEFAULT_ROOT_MODEL": ROOT_MODEL,
        "DEFAULT_SUB_MODEL": SUB_MODEL,
        "RATE_LIMITS_JSON": UNLIMITED_RATE,
        "RLM_QUOTAS_JSON": UNLIMITED_QUOTAS,
    }
    settings = Settings(**env)  # type: ignore[arg-type]
    with contextlib.ExitStack() as stack:
        if sandbox_kind == "pool":
            pool = stack.enter_context(temporary_pool(document_root=str(settings.data_dir)))
            env["LAMBDA_FUNCTION_NAME"] = pool.socket_path
        else:
            env["RLM_DEV_UNSANDBOXED"] = "1"  # --sandbox in-process: steps in the control plane
        storage = open_storage(settings)
        storage.init()
        address = f"127.0.0.1:{free_port()}"
        plane = stack.enter_context(_control_plane(address, env, directory / "control-plane.log"))
        key, _ = storage.metadata.create_api_key("bench")
        owner = storage.metadata.authenticate(key)
        assert owner is not None
        deadline = time.monotonic() + 120
        while not grpc_serving(address):
            if plane.poll() is not None or time.monotonic() > deadline:
                log = (directory / "control-plane.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the control plane did not start:\n{log}")
            time.sleep(0.1)
        channel = grpc.insecure_channel(address)
        stack.callback(channel.close)
        auth = (("authorization", f"Bearer {key}"),)
        yield _StackRunner(storage, settings, channel, owner["tenant_id"], auth).run


@contextlib.contextmanager
def _control_plane(address: str, env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`rlm-rs control serve` on `address`; SIGTERM (then SIGKILL) on exit."""
    child_env = {key: value for key, value in os.environ.items() if not key.startswith(("RLM_", "LLM_"))}
    child_env.pop("LAMBDA_FUNCTION_NAME", None)
    child_env.update(env)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "rlm_rs.cli", "control", "serve", "--grpc-address", address],
            env=child_env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            yield process
        finally:
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(15)
            process.kill()  # only if SIGTERM did not end it: a reaped process is not signalled
            process.wait()


class _StackRunner:
    """Runs one task on the control plane: a session of its documents, then a
    synchronous Answerer execution (polled until it leaves RUNNING)."""

    def __init__(self, storage: Any, settings: Any, channel: Any, tenant_id: str, auth: Any) -> None:
        from rlm_rs.v1 import execution_pb2_grpc, session_pb2_grpc

        self.storage = storage
        self.settings = settings
        self.tenant_id = tenant_id
        self.auth = auth
        self.sessions = session_pb2_grpc.SessionServiceStub(channel)
        self.executions = execution_pb2_grpc.ExecutionServiceStub(channel)

    def session_for(self, task: Task) -> str:
        from rlm_rs.ingestion.worker import IngestionWorker
        from rlm_rs.storage.uploads import store_upload
        from rlm_rs.v1 import session_pb2

        docs = []
        for index, text in enumerate(task.documents):
            uri = store_upload(self.storage.blobs, self.tenant_id, f"{task.name}-{index}.txt", text.encode())
            docs.append(
                session_pb2.DocumentInput(
                    source_name=f"{task.name}-{index}.txt", mime_type="text/plain", raw_s3_uri=uri
                )
            )
        created = self.sessions.CreateSession(
            session_pb2.CreateSessionRequest(ttl_minutes=120, docs=docs), metadata=self.auth
        )
        worker = IngestionWorker(self.storage, self.settings)
        while worker.run_once():
            pass
        return str(created.session_id)

    def run(self, task: Task) -> Cell:
        import grpc

        from rlm_rs.v1 import execution_pb2
        from rlm_rs.v1.common_pb2 import Budgets

        request = execution_pb2.StartExecutionRequest(
            session_id=self.session_for(task),
            question=f"[task {task.name}] {task.label}: answer with the number or code only.",
            options=execution_pb2.ExecutionOptions(synchronous=True, synchronous_timeout_seconds=300),
            budgets=Budgets(
                max_turns=40,
                max_total_seconds=900,
                max_llm_subcalls=10_000,
                max_rlm_subcalls=CHILDREN,
                max_depth=1,
                max_spans_total=10_000,
            ),
        )
        began = time.perf_counter()
        try:
            execution = self.executions.StartExecution(request, metadata=self.auth, timeout=330)
            while _status(execution) == "RUNNING" and time.perf_counter() - began < 900:
                time.sleep(0.05)
                execution = self.executions.GetExecution(
                    execution_pb2.GetExecutionRequest(execution_id=execution.execution_id), metadata=self.auth
                )
        except grpc.RpcError as exc:
            return Cell(error=f"{exc.code().name}: {exc.details()}"[:200])
        seconds = time.perf_counter() - began
        status = _status(execution)
        error = (
            ""
            if status == "COMPLETED"
            else f"{status}: {execution.error.message}{self._failed_step(execution)}"
        )
        return Cell(
            seconds,
            execution.answer,
            execution.answer.strip() == task.truth,
            turns=execution.budgets_consumed.turns,
            error=error[:400],
        )

    def _failed_step(self, execution: Any) -> str:
        """What the steps said: the first failed step's error, or ""."""
        from rlm_rs.v1 import execution_pb2

        steps = self.executions.ListSteps(
            execution_pb2.ListStepsRequest(execution_id=execution.execution_id), metadata=self.auth
        ).steps
        failed = [step.error for step in steps if not step.success]
        if failed:
            return f"; first failed step {failed[0].code}: {failed[0].message[:150]}"
        return ""


# --- rlms ------------------------------------------------------------------------------------
RLMS_DRIVER = r"""
import json, sys, time
from rlm import RLM
from rlm.clients import get_client
from rlm.utils.prompts import RLM_SYSTEM_PROMPT
config = json.loads(sys.stdin.read())
# the first client imports the SDKs (seconds); not part of any task's time
get_client("openai", {"model_name": "warm", "base_url": config["base_url"], "api_key": "sk-bench"})
for task in config["tasks"]:
    context = open(task["context"], encoding="utf-8").read()
    kwargs = {"model_name": config["root_model"], "base_url": config["base_url"], "api_key": "sk-bench"}
    sub = {"model_name": config["sub_model"], "base_url": config["base_url"], "api_key": "sk-bench"}
    began = time.perf_counter()
    try:
        rlm = RLM(backend="openai", backend_kwargs=kwargs,
                  other_backends=["openai"], other_backend_kwargs=[sub], max_depth=task["depth"],
                  max_iterations=10, max_concurrent_subcalls=task["concurrency"],
                  custom_system_prompt="[task " + task["name"] + "]\n" + RLM_SYSTEM_PROMPT)
        answer, error = rlm.completion(context, root_prompt=task["question"]).response, ""
    except Exception as exc:
        answer, error = "", type(exc).__name__ + ": " + str(exc)[:200]
    print(json.dumps({"name": task["name"], "seconds": time.perf_counter() - began, "answer": str(answer),
                      "error": error}), flush=True)
"""


# The release the documented numbers were measured against: a newer one may
# behave differently (0.1.3 resolves batched calls 16 at a time).
RLMS_VERSION = "0.1.3"


def rlms_python(choice: str, directory: Path) -> tuple[str | None, str]:
    """The python of a venv with `rlms` RLMS_VERSION, or None and why not."""
    if choice == "off":
        return None, "not run (--rlms off)"
    if choice != "auto":
        return (choice, "") if Path(choice).exists() else (None, f"{choice} does not exist")
    uv = shutil.which("uv")
    if uv is None:
        return None, "unavailable: uv is not installed"
    venv = Path(tempfile.gettempdir()) / "rlm-rs-bench-rlms"
    python = venv / "bin" / "python"
    pinned = f"import importlib.metadata as m; assert m.version('rlms') == '{RLMS_VERSION}'"
    check = [str(python), "-c", pinned]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return str(python), ""
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    steps = [
        [uv, "venv", "--quiet", str(venv)],
        [uv, "pip", "install", "--quiet", "--python", str(python), f"rlms=={RLMS_VERSION}"],
    ]
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=600, env=env)
        except subprocess.TimeoutExpired:
            return None, "unavailable: installing rlms timed out"
        if done.returncode != 0:
            return None, f"unavailable: {' '.join(step[:3])} failed: {done.stderr.strip()[-200:]}"
    return str(python), ""


def run_rlms(python: str, base_url: str, task: Task, directory: Path, concurrency: int) -> Cell:
    """The task in a fresh process, after the warm-up task in the same process."""
    entries = []
    for each in (warmup_task(), task):
        context = directory / f"{each.name}.txt"
        context.write_text("\n=====\n".join(each.documents), encoding="utf-8")
        entries.append(
            {
                "name": each.name,
                "context": str(context),
                "depth": each.rlms_depth,
                "concurrency": concurrency,
                "question": each.label,
            }
        )
    config = {"base_url": base_url, "root_model": ROOT_MODEL, "sub_model": SUB_MODEL, "tasks": entries}
    try:
        done = subprocess.run(
            [python, "-c", RLMS_DRIVER], input=json.dumps(config), capture_output=True, text=True, timeout=900
        )
    except subprocess.TimeoutExpired:
        return Cell(error="timed out after 900 s")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return Cell(error=f"rlms failed: {done.stderr.strip()[-200:]}")
    out = json.loads(lines[-1])
    answer = str(out["answer"]).strip()
    return Cell(out["seconds"], answer, answer == task.truth, error=out["error"])


# --- the run ---------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    def floats(text: str) -> list[float]:
        return [float(x) for x in text.split(",") if x]

    def ints(text: str) -> list[int]:
        return [int(x) for x in text.split(",") if x]

    parser.add_argument("--needle-mb", type=floats, default=[1.0, 10.0, 50.0], help="needle corpus sizes")
    parser.add_argument("--records", type=ints, default=[1_000, 5_000], help="aggregation sizes")
    parser.add_argument(
        "--depth2-records", type=int, default=5_000, help="records over the 5 children (0: skip)"
    )
    parser.add_argument("--edge-records", type=int, default=5_000, help="one-record sub-calls (0: skip)")
    parser.add_argument("--sub-latency", type=float, default=0.2, help="seconds per sub-model call")
    parser.add_argument(
        "--edge-sub-latency", type=float, default=0.0, help="sub-call latency of the edge row"
    )
    parser.add_argument("--root-latency", type=float, default=0.0, help="seconds per root-model call")
    parser.add_argument(
        "--rlms", default="auto", help="auto (uv venv), off, or the python of a venv with rlms"
    )
    parser.add_argument(
        "--rlms-children-concurrency",
        type=int,
        default=1,
        help="rlms max_concurrent_subcalls (its REPL is not thread-safe past 1)",
    )
    parser.add_argument(
        "--sandbox",
        choices=["pool", "in-process"],
        default="pool",
        help="run RLM-RS steps in a hardened pool (default) or in-process",
    )
    parser.add_argument("--seed", type=int, default=16, help="seed of the generated corpora")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from rlm_rs.providers.testing_server import OpenAICompatibleServer

    tasks = build_tasks(args)
    warmup = warmup_task()
    models = FakeModels([warmup, *tasks], args.root_latency, args.sub_latency)
    rows: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix="rlm-bench-workload-") as name,
        OpenAICompatibleServer(lambda messages: "", models=(ROOT_MODEL, SUB_MODEL, CHILD_MODEL)) as server,
    ):
        server.reply_with_model = models.reply
        directory = Path(name)
        python, why_not = rlms_python(args.rlms, directory)
        with rlm_rs_stack(server.base_url, directory, args.sandbox) as run_rlm_rs:
            models.reset(warmup)
            run_rlm_rs(warmup)
            for task in tasks:
                models.reset(task)
                ours = run_rlm_rs(task)
                ours.root_calls, ours.sub_calls, ours.peak_concurrency = (
                    models.root_calls,
                    models.sub_calls,
                    models.peak,
                )
                theirs = Cell(error=why_not)
                if python is not None:
                    models.reset(task)
                    theirs = run_rlms(
                        python, server.base_url, task, directory, args.rlms_children_concurrency
                    )
                    theirs.root_calls, theirs.sub_calls, theirs.peak_concurrency = (
                        models.root_calls,
                        models.sub_calls,
                        models.peak,
                    )
                rows[task.name] = {
                    "task": task.label,
                    "truth": task.truth,
                    "rlm_rs": vars(ours),
                    "rlms": vars(theirs),
                }
                if ours.seconds and theirs.seconds:
                    rows[task.name]["ratio"] = round(ours.seconds / theirs.seconds, 3)
    return {
        "settings": {
            "sub_latency": args.sub_latency,
            "root_latency": args.root_latency,
            "edge_sub_latency": args.edge_sub_latency,
            "sandbox": args.sandbox,
            "rlms": python or why_not,
        },
        "rows": rows,
    }


def _cell(cell: dict[str, Any]) -> str:
    if cell.get("seconds") is None:
        return f"- ({cell.get('error') or 'not run'})"
    verdict = "correct" if cell["correct"] else f"WRONG ({cell['answer'][:20]!r}; {cell['error'][:300]})"
    turns = f"{cell['turns']} turns, " if cell.get("turns") else ""
    return (
        f"{cell['seconds']:.2f} s, {verdict}, {turns}{cell['root_calls']} root calls, "
        f"{cell['sub_calls']} sub-calls, peak {cell['peak_concurrency']} concurrent"
    )


def render(result: dict[str, Any]) -> str:
    """The table: one row per task, both systems and RLM-RS / rlms."""
    settings = result["settings"]
    lines = [
        f"sub-model latency {settings['sub_latency']} s (edge row {settings['edge_sub_latency']} s), "
        f"root latency {settings['root_latency']} s, sandbox {settings['sandbox']}; rlms: {settings['rlms']}",
        "",
        "| task | RLM-RS | rlms | RLM-RS / rlms |",
        "|---|---|---|---|",
    ]
    for row in result["rows"].values():
        ratio = f"{row['ratio']:.2f}x" if "ratio" in row else "-"
        lines.append(f"| {row['task']} | {_cell(row['rlm_rs'])} | {_cell(row['rlms'])} | {ratio} |")
    return "\n".join(lines)
