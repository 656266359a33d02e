"""The asyncio client: `AsyncClient(url, api_key)`, the same API as `Client` with `await`.

    async with AsyncClient("grpc://127.0.0.1:50051", api_key) as client:
        session = await client.sessions.create(docs=[uri, ...])
        answer = await session.ask("When was the light first lit?")
        stream = await session.ask("...", stream=True)
        async for event in stream: ...

It mirrors `_sync.py` call for call (same transports' async halves, same
retry policy, same typed results); citations are verified concurrently. It
must never import the appliance's server side.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Mapping, Sequence
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
from rlm_rs.client._grpc import AsyncGrpcTransport
from rlm_rs.client._http import AsyncHttpTransport
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
    UploadProgress,
)

Progress = Any  # Callable[[AsyncSession], None | Awaitable[None]]
# Citations verified at once by AsyncExecutions.answer.
_VERIFY_CONCURRENCY = 8


async def _report(progress: Progress, session: AsyncSession | UploadProgress) -> None:
    result = progress(session)
    if asyncio.iscoroutine(result):
        await result


class AsyncClient:
    """The asyncio form of `Client` (same arguments). Use `async with`, or `await close()`."""

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
        self._transport: AsyncHttpTransport | AsyncGrpcTransport
        if target.kind == "http":
            self._transport = AsyncHttpTransport(target.address, api_key, verify=verify)
        else:
            self._transport = AsyncGrpcTransport(
                target.address, api_key, tls=target.tls, root_certificates=root_certificates
            )
        self.sessions = AsyncSessions(self)
        self.executions = AsyncExecutions(self)
        self.citations = AsyncCitations(self)
        self.uploads = AsyncUploads(self)

    @property
    def transport(self) -> str:
        return self._transport.kind

    async def call(self, name: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """One API call by its gRPC method name, with retries: the REST-shaped JSON answer."""
        op = OPS[name]
        request_id = new_request_id()

        async def attempt() -> dict[str, Any]:  # a coroutine function: tenacity awaits it
            return await self._transport.call(op, params, request_id)

        return await self.retry.acall(name, op.idempotent, attempt)

    async def close(self) -> None:
        await self._transport.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncClient({self.url!r}, transport={self.transport!r})"


# ---------------------------------------------------------------- sessions
@dataclass(frozen=True)
class AsyncSession(SessionInfo):
    """A session (its data as of the last call) with the calls that act on it."""

    _client: AsyncClient | None = field(default=None, repr=False, compare=False)

    @property
    def client(self) -> AsyncClient:
        if self._client is None:
            raise RlmClientError("this AsyncSession is not bound to a client")
        return self._client

    async def refresh(self) -> AsyncSession:
        return await self.client.sessions.get(self.session_id)

    async def wait_ready(
        self, *, progress: Progress = None, timeout: float | None = DEFAULT_READY_TIMEOUT
    ) -> AsyncSession:
        return await self.client.sessions.wait_ready(self.session_id, progress=progress, timeout=timeout)

    async def start(self, question: str, **options: Any) -> Execution:
        return await self.client.executions.start(self.session_id, question, **options)

    @overload
    async def ask(
        self,
        question: str,
        *,
        stream: Literal[False] = False,
        models: Mapping[str, str] | None = None,
        budgets: Mapping[str, float] | None = None,
        timeout: float | None = DEFAULT_ASK_TIMEOUT,
    ) -> Answer: ...

    @overload
    async def ask(
        self,
        question: str,
        *,
        stream: Literal[True],
        models: Mapping[str, str] | None = None,
        budgets: Mapping[str, float] | None = None,
        timeout: float | None = DEFAULT_ASK_TIMEOUT,
    ) -> AsyncAskStream: ...

    async def ask(
        self,
        question: str,
        *,
        stream: bool = False,
        models: Mapping[str, str] | None = None,
        budgets: Mapping[str, float] | None = None,
        timeout: float | None = DEFAULT_ASK_TIMEOUT,
    ) -> Answer | AsyncAskStream:
        """As `Session.ask`; with `stream=True`, `async for` the events, then `await stream.answer()`."""
        execution = await self.start(question, models=models, budgets=budgets)
        if stream:
            return AsyncAskStream(self.client, execution, timeout)
        finished = await self.client.executions.wait(execution.execution_id, timeout=timeout)
        return await self.client.executions.answer(finished)

    async def runtime(
        self,
        *,
        models: Mapping[str, str] | None = None,
        budgets: Mapping[str, float] | None = None,
    ) -> AsyncRuntimeExecution:
        return await self.client.executions.runtime(self.session_id, models=models, budgets=budgets)

    async def span(self, doc_id: str, start_char: int, end_char: int) -> SpanText:
        return await self.client.citations.get_span(self.session_id, doc_id, start_char, end_char)

    async def delete(self) -> str:
        return await self.client.sessions.delete(self.session_id)


class AsyncSessions:
    def __init__(self, client: AsyncClient):
        self._client = client

    def _bind(self, data: Mapping[str, Any]) -> AsyncSession:
        return AsyncSession(**SessionInfo.fields_from_json(data), _client=self._client)

    async def create(
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
    ) -> AsyncSession:
        """As `Sessions.create`; `progress` may be a plain function or a coroutine function."""
        uploaded = [
            (await self._client.uploads.upload(f, progress=progress, index=i, files=len(files))).document()
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
        session = self._bind(await self._client.call("CreateSession", params))
        if not wait:
            return session
        return await self.wait_ready(session.session_id, progress=progress, timeout=timeout)

    async def get(self, session_id: str) -> AsyncSession:
        return self._bind(await self._client.call("GetSession", {"session_id": session_id}))

    async def wait_ready(
        self, session_id: str, *, progress: Progress = None, timeout: float | None = DEFAULT_READY_TIMEOUT
    ) -> AsyncSession:
        deadline = None if timeout is None else time.monotonic() + timeout
        shown: tuple[str, int] | None = None
        attempt = 0
        while True:
            session = await self.get(session_id)
            seen = (session.status, session.ingest_progress[0])
            if progress is not None and seen != shown:
                await _report(progress, session)
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
            await asyncio.sleep(pause)
            attempt += 1

    async def delete(self, session_id: str) -> str:
        return str((await self._client.call("DeleteSession", {"session_id": session_id})).get("status", ""))

    async def list(
        self, *, status: str | None = None, page_size: int = 0, limit: int | None = None
    ) -> AsyncIterator[AsyncSession]:
        """As `Sessions.list`: an async iterator."""
        params = {"status": status or None, "page_size": page_size}
        async for item in _paged(self._client, "ListSessions", "sessions", params, limit):
            yield self._bind(item)


async def _paged(
    client: AsyncClient, name: str, key: str, params: Mapping[str, Any], limit: int | None
) -> AsyncIterator[Mapping[str, Any]]:
    token, count = "", 0
    while True:
        page = await client.call(name, {**params, "page_token": token})
        for item in page.get(key) or []:
            if limit is not None and count >= limit:
                return
            count += 1
            yield item
        token = str(page.get("next_page_token") or "")
        if not token or (limit is not None and count >= limit):
            return


# ---------------------------------------------------------------- uploads
class AsyncUploads:
    def __init__(self, client: AsyncClient):
        self._client = client

    async def upload(
        self,
        file: UploadFile,
        *,
        file_name: str | None = None,
        content_type: str | None = None,
        progress: Progress = None,
        index: int = 0,
        files: int = 1,
    ) -> UploadInfo:
        """As `Uploads.upload`; `progress` may be a coroutine function. The file
        is read in pieces on the event loop's thread (local reads of 1 MiB)."""
        source = upload_source(file, file_name, content_type)
        request_id = new_request_id()

        async def pieces() -> AsyncIterator[bytes]:
            sent = 0
            for piece in source.open():
                sent += len(piece)
                yield piece
                if progress is not None:
                    await _report(progress, source.progress(index, files, sent))
            if progress is not None:
                await _report(progress, source.progress(index, files, sent, done=True))

        async def attempt() -> dict[str, Any]:
            return await self._client._transport.upload(
                source.file_name, source.content_type, pieces(), request_id
            )

        return UploadInfo.from_json(await self._client.retry.acall("Upload", False, attempt))


# ---------------------------------------------------------------- executions
class AsyncExecutions:
    def __init__(self, client: AsyncClient):
        self._client = client

    async def start(
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
        params = execution_params(
            question=question,
            models=models,
            budgets=budgets,
            output_mode=output_mode,
            return_trace=return_trace,
            redact_trace=redact_trace,
        )
        data = await self._client.call("StartExecution", {"session_id": session_id, **params})
        return Execution.from_json(data)

    async def followup(
        self,
        execution_id: str,
        question: str,
        *,
        models: Mapping[str, str] | None = None,
        budgets: Mapping[str, float] | None = None,
    ) -> Execution:
        params = execution_params(question=question, models=models, budgets=budgets)
        data = await self._client.call("StartFollowup", {"execution_id": execution_id, **params})
        return Execution.from_json(data)

    async def list(
        self,
        *,
        session_id: str | None = None,
        status: str | None = None,
        page_size: int = 0,
        limit: int | None = None,
    ) -> AsyncIterator[Execution]:
        """As `Executions.list`: an async iterator."""
        params = {"session_id": session_id or "", "status": status or None, "page_size": page_size}
        async for item in _paged(self._client, "ListExecutions", "executions", params, limit):
            yield Execution.from_json(item)

    async def get(self, execution_id: str) -> Execution:
        return Execution.from_json(await self._client.call("GetExecution", {"execution_id": execution_id}))

    async def wait(self, execution_id: str, *, timeout: float | None = DEFAULT_ASK_TIMEOUT) -> Execution:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            chunk = WAIT_CHUNK_SECONDS
            if deadline is not None:
                chunk = min(chunk, max(0.0, deadline - time.monotonic()))
            params = {"execution_id": execution_id, "timeout_seconds": max(chunk, 0.001)}
            execution = Execution.from_json(await self._client.call("WaitExecution", params))
            if execution.finished:
                return execution
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeoutError(f"execution {execution_id} still {execution.status} after {timeout}s")

    async def cancel(self, execution_id: str) -> CancelResult:
        data = await self._client.call("CancelExecution", {"execution_id": execution_id})
        return CancelResult.from_json(data)

    async def steps(self, execution_id: str, *, page_size: int = 0) -> AsyncIterator[Step]:
        token = ""
        while True:
            params = {"execution_id": execution_id, "page_size": page_size, "page_token": token}
            page = await self._client.call("ListSteps", params)
            for step in page.get("steps") or ():
                yield Step.from_json(step)
            token = str(page.get("next_page_token") or "")
            if not token:
                return

    async def events(self, execution_id: str, *, after: str = "") -> AsyncIterator[Event]:
        """As `Executions.events`: resumed after the last event seen when the stream drops."""
        client = self._client
        policy = client.retry
        request_id = new_request_id()
        last = after
        failures = 0
        while True:
            error: BaseException | None = None
            stream = client._transport.watch(execution_id, last, request_id)
            try:
                async for data in stream:
                    event = Event.from_json(data)
                    if last and event.event_id and event.event_id <= last:
                        continue
                    last = event.event_id or last
                    failures = 0
                    yield event
                    if event.is_final:
                        return
            except (RlmConnectionError, ServiceUnavailableError, RateLimitedError) as exc:
                error = exc
            finally:
                await stream.aclose()
            if error is None and (await self.get(execution_id)).finished:
                return
            failures += 1
            if failures >= policy.max_attempts:
                raise error or RlmConnectionError("the event stream kept ending early", sent=True)
            await asyncio.sleep(policy.delay(failures, error))

    async def answer(self, execution: Execution | str) -> Answer:
        if isinstance(execution, str):
            execution = await self.get(execution)
        if execution.status != "COMPLETED":
            raise ExecutionError(execution)
        citations = await self._client.citations.verify_all(execution.citations)
        return Answer(text=execution.answer or "", citations=citations, execution=execution)

    async def runtime(
        self,
        session_id: str,
        *,
        models: Mapping[str, str] | None = None,
        budgets: Mapping[str, float] | None = None,
    ) -> AsyncRuntimeExecution:
        params = execution_params(models=models, budgets=budgets)
        data = await self._client.call("CreateRuntimeExecution", {"session_id": session_id, **params})
        return AsyncRuntimeExecution(self._client, Execution.from_json(data))


class AsyncAskStream:
    """`async for event in stream`, then `await stream.answer()`."""

    def __init__(self, client: AsyncClient, execution: Execution, timeout: float | None):
        self._client = client
        self.execution = execution
        self._timeout = timeout
        self._answer: Answer | None = None
        self._consumed = False

    @property
    def execution_id(self) -> str:
        return self.execution.execution_id

    async def __aiter__(self) -> AsyncIterator[Event]:
        if self._consumed:
            return
        self._consumed = True
        async for event in self._client.executions.events(self.execution_id):
            yield event
        self.execution = await self._client.executions.wait(self.execution_id, timeout=self._timeout)

    async def answer(self) -> Answer:
        if self._answer is None:
            async for _ in self:
                pass
            if not self.execution.finished:
                self.execution = await self._client.executions.wait(self.execution_id, timeout=self._timeout)
            self._answer = await self._client.executions.answer(self.execution)
        return self._answer


# ---------------------------------------------------------------- runtime mode
class AsyncRuntimeExecution:
    """As `RuntimeExecution`; `async with` cancels it on exit if still RUNNING."""

    def __init__(self, client: AsyncClient, execution: Execution):
        self._client = client
        self.execution = execution

    @property
    def execution_id(self) -> str:
        return self.execution.execution_id

    async def run(
        self, code: str, *, state: Mapping[str, Any] | None = None, resolve_tools: bool = False
    ) -> StepResult:
        params = {"execution_id": self.execution_id, **run_step_params(code, state, resolve_tools)}
        return StepResult.from_json(await self._client.call("RunStep", params))

    async def resolve(
        self, tool_requests: ToolRequests | Mapping[str, Any], *, sub_model: str | None = None
    ) -> ToolResolution:
        requests = tool_requests if isinstance(tool_requests, ToolRequests) else ToolRequests.from_json(
            tool_requests
        )  # fmt: skip
        params: dict[str, Any] = {"execution_id": self.execution_id, "tool_requests": requests.to_json()}
        if sub_model:
            params["models"] = {"sub_model": sub_model}
        return ToolResolution.from_json(await self._client.call("ResolveTools", params))

    async def refresh(self) -> Execution:
        self.execution = await self._client.executions.get(self.execution_id)
        return self.execution

    def steps(self) -> AsyncIterator[Step]:
        return self._client.executions.steps(self.execution_id)

    async def answer(self) -> Answer:
        return await self._client.executions.answer(await self.refresh())

    async def cancel(self) -> CancelResult:
        result = await self._client.executions.cancel(self.execution_id)
        with contextlib.suppress(RlmClientError):
            await self.refresh()
        return result

    async def __aenter__(self) -> AsyncRuntimeExecution:
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(RlmClientError):
            if not (await self.refresh()).finished:
                await self.cancel()


# ---------------------------------------------------------------- citations
class AsyncCitations:
    def __init__(self, client: AsyncClient):
        self._client = client

    async def verify(self, ref: SpanRef | Mapping[str, Any]) -> Citation:
        ref = ref if isinstance(ref, SpanRef) else SpanRef.from_json(ref)
        data = await self._client.call("VerifyCitation", {"ref": ref.to_json()})
        return Citation.from_verify(ref, data)

    async def verify_all(self, refs: Sequence[SpanRef]) -> tuple[Citation, ...]:
        gate = asyncio.Semaphore(_VERIFY_CONCURRENCY)

        async def one(ref: SpanRef) -> Citation:
            async with gate:
                return await self.verify(ref)

        return tuple(await asyncio.gather(*(one(ref) for ref in refs)))

    async def get_span(self, session_id: str, doc_id: str, start_char: int, end_char: int) -> SpanText:
        params = {"session_id": session_id, "doc_id": doc_id, "start_char": start_char, "end_char": end_char}
        return SpanText.from_json(await self._client.call("GetSpan", params))
