"""The synchronous client: `Client(url, api_key)` and the handles it returns.

    client = Client("http://127.0.0.1:8080", api_key)
    session = client.sessions.create(docs=[uri, ...], progress=print)   # waits for READY
    answer = session.ask("When was the light first lit?")               # citations verified

Every call goes through the transport the URL names (`_common.parse_target`)
and the retry policy (`_retry.py`). It must never import the appliance's
server side (control plane, storage, sandbox): this is what a remote caller
installs.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, overload

from rlm_rs.client._common import (
    DEFAULT_ASK_TIMEOUT,
    DEFAULT_READY_TIMEOUT,
    WAIT_CHUNK_SECONDS,
    UploadFile,
    create_session_params,
    execution_params,
    new_request_id,
    parse_target,
    poll_interval,
    run_step_params,
    upload_source,
)
from rlm_rs.client._grpc import GrpcTransport
from rlm_rs.client._http import HttpTransport
from rlm_rs.client._ops import OPS
from rlm_rs.client._retry import RetryPolicy
from rlm_rs.client.errors import (
    ExecutionError,
    RateLimitedError,
    RlmClientError,
    RlmConnectionError,
    ServiceUnavailableError,
    SessionFailedError,
    WaitTimeoutError,
)
from rlm_rs.client.types import (
    SESSION_DEAD_STATUSES,
    Answer,
    CancelResult,
    Citation,
    DocumentInput,
    Event,
    Execution,
    SessionInfo,
    SpanRef,
    SpanText,
    Step,
    StepResult,
    ToolRequests,
    ToolResolution,
    UploadInfo,
)

Progress = Any  # Callable[[Session], None]; Any keeps the public signature readable


class Client:
    """A connection to one RLM-RS appliance, over REST or gRPC (chosen by the URL).

    `api_key` defaults to `RLM_API_KEY`. `retry` sets how refused calls are
    repeated (`RetryPolicy(max_attempts=1)`: never). `root_certificates`
    (PEM) is for `grpcs://` servers with a private CA; `verify` is httpx's
    TLS verification for `https://`. Use as a context manager, or `close()`.
    """

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        retry: RetryPolicy | None = None,
        root_certificates: bytes | None = None,
        verify: Any = True,
    ):
        api_key = api_key or os.environ.get("RLM_API_KEY", "")
        if not api_key:
            raise ValueError("an API key is needed: pass api_key or set RLM_API_KEY")
        target = parse_target(url)
        self.url = url
        self.retry = retry or RetryPolicy()
        self._transport: HttpTransport | GrpcTransport
        if target.kind == "http":
            self._transport = HttpTransport(target.address, api_key, verify=verify)
        else:
            self._transport = GrpcTransport(
                target.address, api_key, tls=target.tls, root_certificates=root_certificates
            )
        self.sessions = Sessions(self)
        self.executions = Executions(self)
        self.citations = Citations(self)
        self.uploads = Uploads(self)

    @property
    def transport(self) -> str:
        """ "http" or "grpc"."""
        return self._transport.kind

    def call(self, name: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """One API call by its gRPC method name, with retries: the REST-shaped JSON answer."""
        op = OPS[name]
        request_id = new_request_id()
        return self.retry.call(name, op.idempotent, lambda: self._transport.call(op, params, request_id))

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r}, transport={self.transport!r})"


# ---------------------------------------------------------------- sessions
@dataclass(frozen=True)
class Session(SessionInfo):
    """A session (its data as of the last call) with the calls that act on it."""

    _client: Client | None = field(default=None, repr=False, compare=False)

    @property
    def client(self) -> Client:
        if self._client is None:
            raise RlmClientError("this Session is not bound to a client")
        return self._client

    def refresh(self) -> Session:
        return self.client.sessions.get(self.session_id)

    def wait_ready(
        self, *, progress: Progress = None, timeout: float | None = DEFAULT_READY_TIMEOUT
    ) -> Session:
        return self.client.sessions.wait_ready(self.session_id, progress=progress, timeout=timeout)

    def start(self, question: str, **options: Any) -> Execution:
        """Start an Answerer execution (`Executions.start`'s options)."""
        return self.client.executions.start(self.session_id, question, **options)

    @overload
    def ask(
        self,
        question: str,
        *,
        stream: Literal[False] = False,
        models: Mapping[str, str] | None = None,
        budgets: Mapping[str, float] | None = None,
        timeout: float | None = DEFAULT_ASK_TIMEOUT,
    ) -> Answer: ...

    @overload
    def ask(
        self,
        question: str,
        *,
        stream: Literal[True],
        models: Mapping[str, str] | None = None,
        budgets: Mapping[str, float] | None = None,
        timeout: float | None = DEFAULT_ASK_TIMEOUT,
    ) -> AskStream: ...

    def ask(
        self,
        question: str,
        *,
        stream: bool = False,
        models: Mapping[str, str] | None = None,
        budgets: Mapping[str, float] | None = None,
        timeout: float | None = DEFAULT_ASK_TIMEOUT,
    ) -> Answer | AskStream:
        """Ask a question; the answer comes back with every citation verified.

        With `stream=True` the result is an `AskStream`: iterate it for the
        execution's live events, then read `.answer`. Raises ExecutionError when
        the execution ends other than COMPLETED, WaitTimeoutError past `timeout`.
        """
        execution = self.start(question, models=models, budgets=budgets)
        if stream:
            return AskStream(self.client, execution, timeout)
        finished = self.client.executions.wait(execution.execution_id, timeout=timeout)
        return self.client.executions.answer(finished)

    def runtime(
        self,
        *,
        models: Mapping[str, str] | None = None,
        budgets: Mapping[str, float] | None = None,
    ) -> RuntimeExecution:
        """A new runtime execution on this session: the caller drives the steps."""
        return self.client.executions.runtime(self.session_id, models=models, budgets=budgets)

    def span(self, doc_id: str, start_char: int, end_char: int) -> SpanText:
        return self.client.citations.get_span(self.session_id, doc_id, start_char, end_char)

    def delete(self) -> str:
        return self.client.sessions.delete(self.session_id)


class Sessions:
    """`client.sessions`: create, get, wait for READY, delete."""

    def __init__(self, client: Client):
        self._client = client

    def _bind(self, data: Mapping[str, Any]) -> Session:
        return Session(**SessionInfo.fields_from_json(data), _client=self._client)

    def create(
        self,
        docs: Sequence[DocumentInput | str | Mapping[str, Any]] = (),
        *,
        files: Sequence[UploadFile] = (),
        ttl_minutes: int | None = None,
        enable_search: bool | None = None,
        readiness_mode: str | None = None,
        models: Mapping[str, str] | None = None,
        budgets: Mapping[str, float] | None = None,
        wait: bool = True,
        progress: Progress = None,
        timeout: float | None = DEFAULT_READY_TIMEOUT,
    ) -> Session:
        """Create a session and, unless `wait=False`, wait until it is READY.

        The documents are `files` (paths, bytes or binary file objects: each is
        uploaded first, `progress(UploadProgress)` after every MiB) followed by
        `docs` (already uploaded: `s3://` URIs, `DocumentInput`s or
        `UploadInfo.document()`s). While it waits, `progress(session)` is
        called whenever its ingestion moves on."""
        uploaded = [
            self._client.uploads.upload(f, progress=progress, index=i, files=len(files)).document()
            for i, f in enumerate(files)
        ]
        params = create_session_params(
            [*uploaded, *docs],
            ttl_minutes=ttl_minutes,
            enable_search=enable_search,
            readiness_mode=readiness_mode,
            models=models,
            budgets=budgets,
        )
        session = self._bind(self._client.call("CreateSession", params))
        if not wait:
            return session
        return self.wait_ready(session.session_id, progress=progress, timeout=timeout)

    def get(self, session_id: str) -> Session:
        return self._bind(self._client.call("GetSession", {"session_id": session_id}))

    def wait_ready(
        self, session_id: str, *, progress: Progress = None, timeout: float | None = DEFAULT_READY_TIMEOUT
    ) -> Session:
        """Poll until READY; SessionFailedError if it fails, WaitTimeoutError past `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        shown: tuple[str, int] | None = None
        attempt = 0
        while True:
            session = self.get(session_id)
            seen = (session.status, session.ingest_progress[0])
            if progress is not None and seen != shown:
                progress(session)
            shown = seen
            if session.ready:
                return session
            if session.status in SESSION_DEAD_STATUSES:
                raise SessionFailedError(session)
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeoutError(f"session {session_id} not READY in time (status {session.status})")
            pause = poll_interval(attempt)
            if deadline is not None:
                pause = max(0.0, min(pause, deadline - time.monotonic()))
            time.sleep(pause)
            attempt += 1

    def delete(self, session_id: str) -> str:
        """Delete the session (its executions are cancelled); the new status, DELETING."""
        return str(self._client.call("DeleteSession", {"session_id": session_id}).get("status", ""))

    def list(
        self, *, status: str | None = None, page_size: int = 0, limit: int | None = None
    ) -> Iterator[Session]:
        """The caller's sessions, newest first (pages followed lazily; at most `limit`)."""
        params = {"status": status or None, "page_size": page_size}
        for item in _paged(self._client, "ListSessions", "sessions", params, limit):
            yield self._bind(item)


def _paged(
    client: Client, name: str, key: str, params: Mapping[str, Any], limit: int | None
) -> Iterator[Mapping[str, Any]]:
    """Every item of a listing, following next_page_token."""
    token, count = "", 0
    while True:
        page = client.call(name, {**params, "page_token": token})
        for item in page.get(key) or []:
            if limit is not None and count >= limit:
                return
            count += 1
            yield item
        token = str(page.get("next_page_token") or "")
        if not token or (limit is not None and count >= limit):
            return


# ---------------------------------------------------------------- uploads
class Uploads:
    """`client.uploads`: files into the appliance (POST /v1/uploads or gRPC Upload), streamed."""

    def __init__(self, client: Client):
        self._client = client

    def upload(
        self,
        file: UploadFile,
        *,
        file_name: str | None = None,
        content_type: str | None = None,
        progress: Progress = None,
        index: int = 0,
        files: int = 1,
    ) -> UploadInfo:
        """Upload one file (a path, bytes, or a binary file object), read and
        sent in pieces, never whole; `progress(UploadProgress)` after each MiB.
        A refused attempt (RATE_LIMITED, a connection that never opened) is
        repeated from the start of the file."""
        source = upload_source(file, file_name, content_type)
        request_id = new_request_id()

        def pieces() -> Iterator[bytes]:
            sent = 0
            for piece in source.open():
                sent += len(piece)
                yield piece
                if progress is not None:
                    progress(source.progress(index, files, sent))
            if progress is not None:
                progress(source.progress(index, files, sent, done=True))

        reply = self._client.retry.call(
            "Upload",
            False,
            lambda: self._client._transport.upload(
                source.file_name, source.content_type, pieces(), request_id
            ),
        )
        return UploadInfo.from_json(reply)


# ---------------------------------------------------------------- executions
class Executions:
    """`client.executions`: start, wait, events, steps, cancel, follow-ups, runtime mode."""

    def __init__(self, client: Client):
        self._client = client

    def start(
        self,
        session_id: str,
        question: str,
        *,
        models: Mapping[str, str] | None = None,
        budgets: Mapping[str, float] | None = None,
        output_mode: str | None = None,
        return_trace: bool | None = None,
        redact_trace: bool | None = None,
    ) -> Execution:
        """Start an Answerer execution; it answers at once, RUNNING."""
        params = execution_params(
            question=question,
            models=models,
            budgets=budgets,
            output_mode=output_mode,
            return_trace=return_trace,
            redact_trace=redact_trace,
        )
        return Execution.from_json(self._client.call("StartExecution", {"session_id": session_id, **params}))

    def followup(
        self,
        execution_id: str,
        question: str,
        *,
        models: Mapping[str, str] | None = None,
        budgets: Mapping[str, float] | None = None,
    ) -> Execution:
        """A new execution that continues a finished one's work (ConflictError while it runs)."""
        params = execution_params(question=question, models=models, budgets=budgets)
        return Execution.from_json(
            self._client.call("StartFollowup", {"execution_id": execution_id, **params})
        )

    def get(self, execution_id: str) -> Execution:
        return Execution.from_json(self._client.call("GetExecution", {"execution_id": execution_id}))

    def list(
        self,
        *,
        session_id: str | None = None,
        status: str | None = None,
        page_size: int = 0,
        limit: int | None = None,
    ) -> Iterator[Execution]:
        """The caller's top-level executions, newest first, optionally of one
        session and in one status (pages followed lazily; at most `limit`).
        Each is the view without contexts, trace and children."""
        params = {"session_id": session_id or "", "status": status or None, "page_size": page_size}
        for item in _paged(self._client, "ListExecutions", "executions", params, limit):
            yield Execution.from_json(item)

    def wait(self, execution_id: str, *, timeout: float | None = DEFAULT_ASK_TIMEOUT) -> Execution:
        """The execution once it has ended; WaitTimeoutError if it still runs after `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            chunk = WAIT_CHUNK_SECONDS
            if deadline is not None:
                chunk = min(chunk, max(0.0, deadline - time.monotonic()))
            params = {"execution_id": execution_id, "timeout_seconds": max(chunk, 0.001)}
            execution = Execution.from_json(self._client.call("WaitExecution", params))
            if execution.finished:
                return execution
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeoutError(f"execution {execution_id} still {execution.status} after {timeout}s")

    def cancel(self, execution_id: str) -> CancelResult:
        return CancelResult.from_json(self._client.call("CancelExecution", {"execution_id": execution_id}))

    def steps(self, execution_id: str, *, page_size: int = 0) -> Iterator[Step]:
        """Every persisted step, in turn order (pages fetched as needed)."""
        token = ""
        while True:
            params = {"execution_id": execution_id, "page_size": page_size, "page_token": token}
            page = self._client.call("ListSteps", params)
            for step in page.get("steps") or ():
                yield Step.from_json(step)
            token = str(page.get("next_page_token") or "")
            if not token:
                return

    def events(self, execution_id: str, *, after: str = "") -> Iterator[Event]:
        """The execution's live events from the start (or after event id `after`),
        ending with the `status` event. A dropped stream is reopened after the
        last event seen (docs/client.md, "Streaming"): no event twice, none lost."""
        client = self._client
        policy = client.retry
        request_id = new_request_id()
        last = after
        failures = 0
        while True:
            error: BaseException | None = None
            stream = client._transport.watch(execution_id, last, request_id)
            try:
                for data in stream:
                    event = Event.from_json(data)
                    if last and event.event_id and event.event_id <= last:
                        continue  # already delivered before the stream was reopened
                    last = event.event_id or last
                    failures = 0
                    yield event
                    if event.is_final:
                        return
            except (RlmConnectionError, ServiceUnavailableError, RateLimitedError) as exc:
                error = exc
            finally:
                stream.close()
            if error is None and self.get(execution_id).finished:
                return  # ended cleanly and nothing follows (its status event was before `after`)
            failures += 1
            if failures >= policy.max_attempts:
                raise error or RlmConnectionError("the event stream kept ending early", sent=True)
            time.sleep(policy.delay(failures, error))

    def answer(self, execution: Execution | str) -> Answer:
        """A finished execution's answer with each citation verified
        (ExecutionError unless it COMPLETED)."""
        if isinstance(execution, str):
            execution = self.get(execution)
        if execution.status != "COMPLETED":
            raise ExecutionError(execution)
        citations = self._client.citations.verify_all(execution.citations)
        return Answer(text=execution.answer or "", citations=citations, execution=execution)

    def runtime(
        self,
        session_id: str,
        *,
        models: Mapping[str, str] | None = None,
        budgets: Mapping[str, float] | None = None,
    ) -> RuntimeExecution:
        """Create a runtime execution (the caller drives the steps)."""
        params = execution_params(models=models, budgets=budgets)
        data = self._client.call("CreateRuntimeExecution", {"session_id": session_id, **params})
        return RuntimeExecution(self._client, Execution.from_json(data))


class AskStream:
    """The live events of an `ask(..., stream=True)`; `.answer` once they end."""

    def __init__(self, client: Client, execution: Execution, timeout: float | None):
        self._client = client
        self.execution = execution
        self._timeout = timeout
        self._answer: Answer | None = None
        self._consumed = False

    @property
    def execution_id(self) -> str:
        return self.execution.execution_id

    def __iter__(self) -> Iterator[Event]:
        if self._consumed:
            return
        self._consumed = True
        yield from self._client.executions.events(self.execution_id)
        self.execution = self._client.executions.wait(self.execution_id, timeout=self._timeout)

    @property
    def answer(self) -> Answer:
        """The verified answer (reads the rest of the stream first if needed)."""
        if self._answer is None:
            for _ in self:
                pass
            if not self.execution.finished:
                self.execution = self._client.executions.wait(self.execution_id, timeout=self._timeout)
            self._answer = self._client.executions.answer(self.execution)
        return self._answer


# ---------------------------------------------------------------- runtime mode
class RuntimeExecution:
    """A runtime execution: run steps, resolve their tools, read the answer.

    As a context manager it cancels the execution on exit if it is still
    RUNNING (a forgotten runtime execution holds a quota slot until its
    `max_total_seconds` ends it).
    """

    def __init__(self, client: Client, execution: Execution):
        self._client = client
        self.execution = execution

    @property
    def execution_id(self) -> str:
        return self.execution.execution_id

    def run(
        self, code: str, *, state: Mapping[str, Any] | None = None, resolve_tools: bool = False
    ) -> StepResult:
        """Run one step (bare Python or a ```repl block). A step's own failure is in
        the result's `error` (`raise_for_error()` raises it); `resolve_tools`
        resolves what it queued before answering."""
        params = {"execution_id": self.execution_id, **run_step_params(code, state, resolve_tools)}
        return StepResult.from_json(self._client.call("RunStep", params))

    def resolve(
        self, tool_requests: ToolRequests | Mapping[str, Any], *, sub_model: str | None = None
    ) -> ToolResolution:
        """Resolve tool requests (a step's `tool_requests`); the results are also
        injected into the state the next step sees."""
        requests = tool_requests if isinstance(tool_requests, ToolRequests) else ToolRequests.from_json(
            tool_requests
        )  # fmt: skip
        params: dict[str, Any] = {"execution_id": self.execution_id, "tool_requests": requests.to_json()}
        if sub_model:
            params["models"] = {"sub_model": sub_model}
        return ToolResolution.from_json(self._client.call("ResolveTools", params))

    def refresh(self) -> Execution:
        self.execution = self._client.executions.get(self.execution_id)
        return self.execution

    def steps(self) -> Iterator[Step]:
        return self._client.executions.steps(self.execution_id)

    def answer(self) -> Answer:
        """After a step called FINAL: the answer with its citations verified."""
        return self._client.executions.answer(self.refresh())

    def cancel(self) -> CancelResult:
        result = self._client.executions.cancel(self.execution_id)
        with contextlib.suppress(RlmClientError):
            self.refresh()
        return result

    def __enter__(self) -> RuntimeExecution:
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(RlmClientError):
            if not self.refresh().finished:
                self.cancel()


# ---------------------------------------------------------------- citations
class Citations:
    """`client.citations`: verify SpanRefs, read spans."""

    def __init__(self, client: Client):
        self._client = client

    def verify(self, ref: SpanRef | Mapping[str, Any]) -> Citation:
        ref = ref if isinstance(ref, SpanRef) else SpanRef.from_json(ref)
        return Citation.from_verify(ref, self._client.call("VerifyCitation", {"ref": ref.to_json()}))

    def verify_all(self, refs: Sequence[SpanRef]) -> tuple[Citation, ...]:
        return tuple(self.verify(ref) for ref in refs)

    def get_span(self, session_id: str, doc_id: str, start_char: int, end_char: int) -> SpanText:
        params = {"session_id": session_id, "doc_id": doc_id, "start_char": start_char, "end_char": end_char}
        return SpanText.from_json(self._client.call("GetSpan", params))
