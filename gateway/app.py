"""The REST gateway: the HTTP API (docs/api.md#rest-api) in front of the gRPC control plane.

A translator only, in modules by concern: the envelope and the gRPC -> HTTP
mapping (gateway/errors.py), the edge middleware (gateway/middleware.py: request
ids, size limit, access log), one control-plane call per request
(gateway/calls.py), and the routes per area (gateway/routes/). Every non-2xx
body is the spec's error envelope; no stack trace or internal message ever
reaches a caller. It must never import control-plane internals
(rlm_rs.control, rlm_rs.storage, ...).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from gateway import errors
from gateway.backend import ChannelPool
from gateway.middleware import EdgeMiddleware
from gateway.routes import ROUTERS
from gateway.routes.uploads import UPLOAD_PATH
from rlm_rs.settings import Settings


def _query_names(dependant: Dependant) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


async def known_query_only(request: Request) -> None:
    """A query parameter the route does not declare is a 422 envelope, as an
    unknown body field is (models are extra="forbid"): a misspelt filter must
    not silently list everything."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not request.query_params:
        return
    declared = _query_names(route.dependant)
    unknown = sorted(set(request.query_params) - declared)
    if unknown:
        raise RequestValidationError(
            [{"type": "extra_forbidden", "loc": ("query", unknown[0][:64]), "msg": "unknown query parameter"}]
        )


def create_app(settings: Settings, grpc_target: str | None = None) -> FastAPI:
    """The gateway app; `grpc_target` defaults to settings.grpc_address."""
    pool = ChannelPool(grpc_target or settings.grpc_address)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool.open()
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(
        title="RLM-RS API",
        version="1.3",
        description="HTTP API of the Recursive Language Model Runtime Service (docs/api.md).",
        lifespan=lifespan,
        dependencies=[Depends(known_query_only)],
    )
    app.state.pool = pool
    for router in ROUTERS:
        app.include_router(router)
    errors.install(app, [route for router in ROUTERS for route in router.routes])
    app.add_middleware(
        EdgeMiddleware,
        max_body_bytes=settings.max_request_bytes,
        upload_path=UPLOAD_PATH,
        max_upload_bytes=settings.max_upload_bytes,
    )
    return app
