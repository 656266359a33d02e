"""The gateway's HTTP/1.1 protocol: uvicorn's h11 protocol with read deadlines.

uvicorn closes idle keep-alive connections, but a client that trickles its
request headers (slowloris) or its body holds a connection, and its memory,
for as long as it likes. Here every request gets two deadlines, from the
moment its first byte (or the connection) arrives: the headers must be
complete within `header_timeout`, then the body within `body_timeout`; past
either, the connection is closed (no response: the client is not reading
one, and the error table has no code for it). Header size is bounded by h11's incomplete-event limit,
connection count by uvicorn's `limit_concurrency`. Nothing here reads bodies
or touches the application.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from rlm_rs.observability import get_logger

log = get_logger()


class TimedH11Protocol(H11Protocol):
    """H11Protocol plus the header and body deadlines (class attributes, set by `configured`)."""

    header_timeout: float = 10.0
    body_timeout: float = 60.0

    @classmethod
    def configured(cls, header_timeout: float, body_timeout: float) -> type[TimedH11Protocol]:
        return type(
            "TimedH11Protocol",
            (cls,),
            {"header_timeout": header_timeout, "body_timeout": body_timeout},
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._phase = ""  # "headers", "body" or "" (nothing owed by the client)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm("headers")

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow_client_state()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Keep-alive: the next request has uvicorn's idle timeout until its first
        # byte, then its own header deadline (a pipelined one starts now).
        self._disarm()
        self._follow_client_state()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _follow_client_state(self) -> None:
        state = self.conn.their_state
        if state is h11.IDLE and (self.conn.trailing_data[0] or self._phase == "headers"):
            self._arm("headers")  # part of a request line or headers is buffered
        elif state is h11.SEND_BODY:
            self._arm("body")
        else:
            self._disarm()

    def _arm(self, phase: str) -> None:
        if self._phase == phase:
            return  # the deadline runs from the phase's start, not the last byte
        self._disarm()
        timeout = self.header_timeout if phase == "headers" else self.body_timeout
        self._phase = phase
        self._deadline = self.loop.call_later(timeout, self._expired, phase)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = None
        self._phase = ""

    def _expired(self, phase: str) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        timeout = self.header_timeout if phase == "headers" else self.body_timeout
        client = f"{self.client[0]}:{self.client[1]}" if self.client else ""
        log.warning("http_read_timeout", phase=phase, timeout_seconds=timeout, client=client)
        if phase == "body" and self.cycle is not None:
            self.cycle.disconnected = True  # the application's receive() sees http.disconnect
            self.cycle.message_event.set()
        self._phase = ""
        self.transport.close()
