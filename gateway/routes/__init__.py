"""The REST operations, one module per area, each an APIRouter.

Every route validates its input with a model from gateway.models, builds one
proto request (gateway.calls.build), makes one control-plane call and renders
the reply (gateway.convert.to_dict). No route decides anything the control
plane decides (auth, tenancy, limits, budgets).
"""

from __future__ import annotations

from fastapi import APIRouter

from gateway.routes import citations, events, executions, health, listings, runtime, sessions, uploads, viewer

ROUTERS: list[APIRouter] = [
    uploads.router,
    listings.router,
    sessions.router,
    executions.router,
    runtime.router,
    citations.router,
    events.router,
    viewer.router,
    health.router,
]
