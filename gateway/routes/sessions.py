"""Sessions: create (201), get with readiness, delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from gateway import models as m
from gateway.calls import Call, build, caller, dump
from gateway.convert import to_dict
from gateway.errors import ERROR_RESPONSES
from rlm_rs.v1 import session_pb2

router = APIRouter(prefix="/v1", responses=ERROR_RESPONSES, tags=["sessions"])


@router.post("/sessions", response_model=m.SessionCreated, status_code=201)
async def create_session(body: m.CreateSessionBody, call: Call = caller) -> Any:
    req = build(session_pb2.CreateSessionRequest(), dump(body))
    return to_dict(await call(call.stubs.sessions.CreateSession, req))


@router.get("/sessions/{session_id}", response_model=m.SessionView)
async def get_session(session_id: str, call: Call = caller) -> Any:
    req = build(session_pb2.GetSessionRequest(), {"session_id": session_id})
    return to_dict(await call(call.stubs.sessions.GetSession, req))


@router.delete("/sessions/{session_id}", response_model=m.SessionDeleted)
async def delete_session(session_id: str, call: Call = caller) -> Any:
    req = build(session_pb2.DeleteSessionRequest(), {"session_id": session_id})
    return to_dict(await call(call.stubs.sessions.DeleteSession, req))
