"""GET /health/live and /health/ready: the gateway's and the control plane's health.

Ready asks the control plane's grpc.health.v1 service on every pooled channel
and reports each component; it needs no API key and never shows more than a
component's serving status.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from gateway import models as m
from gateway.backend import ChannelPool, check_health
from rlm_rs.errors import RlmError

router = APIRouter(prefix="/health", tags=["health"])

# Control-plane health services asked by /health/ready ("" = the whole server).
# The three API services must serve; storage/sandbox/provider are reported
# when the control plane registers them (UNKNOWN otherwise, not a failure).
# "sandbox_hardened" NOT_SERVING (a control plane in development mode, steps
# in its own process) shows as sandbox NOT_HARDENED: still ready, never hidden.
HEALTH_COMPONENTS = [
    "",
    "rlm_rs.v1.SessionService",
    "rlm_rs.v1.ExecutionService",
    "rlm_rs.v1.CitationService",
    "storage",
    "sandbox",
    "sandbox_hardened",
    "provider",
]
_CHECK_SECONDS = 2.0


@router.get("/live", response_model=m.Live)
async def live() -> Any:
    return {"status": "ok"}


@router.get(
    "/ready",
    response_model=m.Ready,
    responses={503: {"model": m.ErrorEnvelope, "description": "SERVICE_UNAVAILABLE"}},
)
async def ready(request: Request) -> Any:
    pool: ChannelPool = request.app.state.pool
    channels = pool.all()
    components = await check_health(channels[0], HEALTH_COMPONENTS, timeout=_CHECK_SECONDS)
    overall = components.pop("", "UNREACHABLE")
    for stubs in channels[1:]:  # ready means every pooled channel is connected
        other = await check_health(stubs, [""], timeout=_CHECK_SECONDS)
        if other[""] != "SERVING":
            overall = other[""]
    hardened = components.pop("sandbox_hardened", "UNKNOWN")
    if hardened == "NOT_SERVING" and components.get("sandbox") == "SERVING":
        components["sandbox"] = "NOT_HARDENED"
    components = {"control_plane": overall, **components}
    bad = {k: v for k, v in components.items() if v not in ("SERVING", "UNKNOWN", "NOT_HARDENED")}
    if bad:
        raise RlmError("SERVICE_UNAVAILABLE", "not ready", {"components": components})
    return {"status": "ok", "components": components}
