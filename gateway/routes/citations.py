"""Spans and citations: read a span of canonical text, verify a SpanRef."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from gateway import models as m
from gateway.calls import Call, build, caller, dump
from gateway.convert import to_dict
from gateway.errors import ERROR_RESPONSES
from rlm_rs.v1 import citation_pb2

router = APIRouter(prefix="/v1", responses=ERROR_RESPONSES, tags=["citations"])


@router.post("/spans/get", response_model=m.SpanText)
async def get_span(body: m.SpanGetBody, call: Call = caller) -> Any:
    req = build(citation_pb2.GetSpanRequest(), dump(body))
    return to_dict(await call(call.stubs.citations.GetSpan, req))


@router.post("/citations/verify", response_model=m.VerifyResult)
async def verify_citation(body: m.VerifyBody, call: Call = caller) -> Any:
    req = build(citation_pb2.VerifyCitationRequest(), dump(body))
    return to_dict(await call(call.stubs.citations.VerifyCitation, req))
