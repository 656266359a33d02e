"""One control-plane call per request: metadata, deadline, one safe retry, error mapping.

`caller` is the FastAPI dependency every /v1 route takes: a `Call` bound to a
pooled channel and the request's metadata (`x-request-id`, and the caller's
`authorization` passed through unchanged). A call that never left the gateway
(its channel was reconnecting) is retried once; any other failure becomes the
spec error it carried (gateway/errors.py). Nothing here interprets a reply.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import grpc
import grpc.aio
from fastapi import Depends, Request
from fastapi.security import HTTPBearer
from google.protobuf.message import Message

from gateway import models as m
from gateway.backend import ChannelPool, Stubs
from gateway.convert import from_dict
from gateway.errors import REQUEST_ID_HEADER, error_from_rpc, error_info, request_id
from rlm_rs import limits as lim
from rlm_rs.errors import RlmError

DEFAULT_DEADLINE_SECONDS = 30.0
_RECONNECT_WAIT_SECONDS = 1.0
# Set by the control plane's WatchExecution once the watch is accepted.
WATCH_STARTED = "x-rlm-watch"

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer rlm_key_...")


def never_sent(exc: grpc.aio.AioRpcError, state_before: grpc.ChannelConnectivity) -> bool:
    """A call that failed because its channel had no connection: it never left
    the gateway, so retrying it cannot run anything twice."""
    return (
        exc.code() == grpc.StatusCode.UNAVAILABLE
        and state_before != grpc.ChannelConnectivity.READY
        and error_info(exc) is None
    )


class Call:
    """One request's view of the control plane: stubs plus metadata."""

    def __init__(self, stubs: Stubs, metadata: tuple[tuple[str, str], ...]):
        self.stubs = stubs
        self.metadata = metadata

    async def __call__(
        self,
        method: Callable[..., Awaitable[Any]],
        request: Message,
        timeout: float = DEFAULT_DEADLINE_SECONDS,
    ) -> Any:
        channel = self.stubs.channel
        state_before = channel.get_state(try_to_connect=False)
        try:
            return await method(request, metadata=self.metadata, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            if not never_sent(exc, state_before):
                raise error_from_rpc(exc) from None
        # The channel was (re)connecting: give it a moment, then one retry.
        try:
            await asyncio.wait_for(channel.channel_ready(), _RECONNECT_WAIT_SECONDS)
            return await method(request, metadata=self.metadata, timeout=timeout)
        except TimeoutError:
            raise RlmError("SERVICE_UNAVAILABLE", "the control plane is unavailable") from None
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None

    async def stream(self, method: Callable[..., Any], request: Message) -> tuple[Any, Any]:
        """Open a server-streaming call and wait until the control plane has
        accepted it (WATCH_STARTED in its initial metadata), so an error before
        the stream starts (auth, not found, validation) raises RlmError here,
        while an HTTP status can still be chosen. Returns the call and what was
        read from it already (None, a message, or grpc.aio.EOF). No deadline:
        the stream ends with its execution, or when the caller goes away."""
        for attempt in (0, 1):
            channel = self.stubs.channel
            state_before = channel.get_state(try_to_connect=False)
            call = method(request, metadata=self.metadata)
            try:
                metadata = await call.initial_metadata()
                if any(key == WATCH_STARTED for key, _ in metadata or ()):
                    return call, None
                # No mark: the call failed before it started (read raises its
                # status), or it ended at once and the mark was not delivered
                # with its end (seen ~1 in 300 for an empty stream).
                return call, await call.read()
            except grpc.aio.AioRpcError as exc:
                if attempt == 1 or not never_sent(exc, state_before):
                    raise error_from_rpc(exc) from None
            try:  # the channel was (re)connecting: give it a moment, then one retry
                await asyncio.wait_for(channel.channel_ready(), _RECONNECT_WAIT_SECONDS)
            except TimeoutError:
                raise RlmError("SERVICE_UNAVAILABLE", "the control plane is unavailable") from None
        raise AssertionError("unreachable")


def _call(request: Request, _auth: Annotated[Any, Depends(_bearer)] = None) -> Call:
    metadata: list[tuple[str, str]] = [(REQUEST_ID_HEADER, request_id(request))]
    authorization = request.headers.get("authorization")
    if authorization is not None:
        if not authorization.isascii() or not authorization.isprintable():
            raise RlmError("UNAUTHORIZED", "missing or invalid API key")
        metadata.append(("authorization", authorization))
    pool: ChannelPool = request.app.state.pool
    return Call(pool.get(), tuple(metadata))


# The dependency every /v1 route takes (it also declares the bearer scheme in OpenAPI).
caller = Depends(_call)


def build(msg: Message, data: dict[str, Any]) -> Message:
    """`msg` filled from a request's fields, or VALIDATION_ERROR."""
    try:
        return from_dict(msg, data)
    except (ValueError, TypeError) as exc:
        raise RlmError("VALIDATION_ERROR", f"value cannot be sent: {type(exc).__name__}") from None


def dump(body: Any) -> dict[str, Any]:
    """A body model's set fields (None: unset)."""
    return dict(body.model_dump(exclude_none=True)) if body is not None else {}


def wait_deadline(seconds: float) -> float:
    """The gRPC deadline of a call the control plane may hold `seconds`."""
    return max(DEFAULT_DEADLINE_SECONDS, seconds + 10.0)


def start_deadline(options: m.ExecutionOptions | None) -> float:
    """A start's deadline: a synchronous start is held its timeout (0 or unset:
    the control plane's default), an asynchronous one answers at once."""
    if options is None or not options.synchronous:
        return DEFAULT_DEADLINE_SECONDS
    return wait_deadline(options.synchronous_timeout_seconds or lim.DEFAULT_SYNCHRONOUS_TIMEOUT_SECONDS)
