"""The control-plane gRPC server: the three services, health, reflection,
optional TLS, a background sweep that takes over orphaned executions, and one
that removes deleted and expired sessions' data (RLM_SESSION_SWEEP_SECONDS).

Health names besides the services: "storage", "sandbox" (reachable),
"sandbox_hardened" (steps run in the hardened pool; NOT_SERVING in development
mode), "provider" (a real probe every few seconds, rlm_rs/providers/probe.py).
Without a pool it refuses to start unless development mode is asked for
(RLM_DEV_UNSANDBOXED / `rlm-rs control serve --dev-unsandboxed`): model code would
run in this process, next to the provider key.
"""

from __future__ import annotations

import threading
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from rlm_rs.control._rpc import AnonymousStreamLimit, CallGuard
from rlm_rs.control.admission import Admission
from rlm_rs.control.costs import model_allowlist
from rlm_rs.control.executions import ExecutionEngine
from rlm_rs.control.executions.leases import check_lease
from rlm_rs.control.lifecycle import SessionReaper
from rlm_rs.control.services import CitationServicer, ExecutionServicer
from rlm_rs.control.sessions import SessionServicer
from rlm_rs.observability import get_logger, set_model_allowlist
from rlm_rs.providers import Provider, make_provider
from rlm_rs.providers.probe import PROBE_PERIOD_SECONDS, probe_provider
from rlm_rs.sandbox.client import InProcessSandbox, SandboxClient, make_sandbox_client
from rlm_rs.settings import Settings
from rlm_rs.storage import Storage, open_storage
from rlm_rs.tracing import ServerTracingInterceptor
from rlm_rs.v1 import (
    citation_pb2,
    citation_pb2_grpc,
    execution_pb2,
    execution_pb2_grpc,
    session_pb2,
    session_pb2_grpc,
)

SERVICE_NAMES = (
    session_pb2.DESCRIPTOR.services_by_name["SessionService"].full_name,
    execution_pb2.DESCRIPTOR.services_by_name["ExecutionService"].full_name,
    citation_pb2.DESCRIPTOR.services_by_name["CitationService"].full_name,
)
UNSANDBOXED_WARNING = (
    "DEVELOPMENT MODE: no sandbox pool; model code runs inside the control plane with its "
    "provider key and storage access. Never expose this process to untrusted tenants."
)
log = get_logger()


class SandboxRequired(Exception):
    """No pool is configured and development mode was not asked for."""

    def __init__(self) -> None:
        super().__init__(
            "no sandbox pool: set LAMBDA_FUNCTION_NAME to the pool's socket (`rlm-rs sandbox serve`), "
            "or pass --dev-unsandboxed (RLM_DEV_UNSANDBOXED=1) to run model code in this process "
            "(development only)"
        )


@dataclass
class ControlPlane:
    server: grpc.Server
    engine: ExecutionEngine
    storage: Storage
    port: int
    _stop: threading.Event
    reaper: SessionReaper | None = None

    def stop(self, grace: float = 5.0) -> None:
        self._stop.set()
        self.server.stop(grace).wait(grace + 1)
        self.engine.close()


def start_control_plane(
    settings: Settings,
    address: str,
    *,
    storage: Storage | None = None,
    sandbox: SandboxClient | None = None,
    provider: Provider | None = None,
    lease_seconds: float = 30.0,
    sweep_seconds: float = 5.0,
    owner: str | None = None,
    session_sweep_seconds: float | None = None,
) -> ControlPlane:
    if sandbox is None and not settings.sandbox_socket and not settings.dev_unsandboxed:
        raise SandboxRequired()
    check_lease(lease_seconds, settings)
    set_model_allowlist(model_allowlist(settings))
    storage = storage or open_storage(settings)
    sandbox = sandbox or make_sandbox_client(settings)
    hardened = not isinstance(sandbox, InProcessSandbox)
    if not hardened:
        log.warning("sandbox_not_hardened", message=UNSANDBOXED_WARNING)
    engine = ExecutionEngine(
        storage,
        settings,
        sandbox,
        provider or make_provider(settings),
        owner=owner,
        lease_seconds=lease_seconds,
    )
    admission = Admission.from_settings(settings, storage.metadata)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.rpc_threads, thread_name_prefix="rpc"),
        interceptors=[
            ServerTracingInterceptor(),
            AnonymousStreamLimit(admission.slots),
            CallGuard(storage, admission, SERVICE_NAMES),  # request id, auth, admission, audit, errors
        ],
        options=[
            ("grpc.max_receive_message_length", settings.max_request_bytes),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            # a second control plane on a busy port fails to bind instead of sharing it
            ("grpc.so_reuseport", 0),
        ],
    )
    reaper = SessionReaper(storage, cancel=engine.cancel, docs=engine.docs)
    session_pb2_grpc.add_SessionServiceServicer_to_server(
        SessionServicer(storage, settings, reaper, engine.records.ceilings), server
    )
    execution_pb2_grpc.add_ExecutionServiceServicer_to_server(ExecutionServicer(engine, storage), server)
    citation_pb2_grpc.add_CitationServiceServicer_to_server(CitationServicer(engine, storage), server)
    health_report = _Health(server, settings, engine, hardened)
    port = _bind(server, settings, address)
    server.start()
    health_report.serving()
    stop = threading.Event()
    _start_background(stop, engine, health_report, reaper, sweep_seconds, settings, session_sweep_seconds)
    return ControlPlane(server, engine, storage, port, stop, reaper)


def _bind(server: grpc.Server, settings: Settings, address: str) -> int:
    """The port: TLS when RLM_TLS_CERT_FILE and RLM_TLS_KEY_FILE are set."""
    if settings.tls_cert_file and settings.tls_key_file:
        credentials = grpc.ssl_server_credentials(
            [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())]
        )
        return server.add_secure_port(address, credentials)
    return server.add_insecure_port(address)


class _Health:
    """grpc.health.v1 for the services and the components "storage",
    "sandbox", "sandbox_hardened" and "provider" (for /health/ready)."""

    def __init__(
        self, server: grpc.Server, settings: Settings, engine: ExecutionEngine, hardened: bool
    ) -> None:
        self.servicer = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, reflection.SERVICE_NAME, health.SERVICE_NAME), server
        )
        self.settings, self.engine, self.hardened = settings, engine, hardened
        self.sandbox = engine.sandbox  # the client the server started with

    def _set(self, name: str, ok: bool) -> None:
        serving, not_serving = (
            health_pb2.HealthCheckResponse.SERVING,
            health_pb2.HealthCheckResponse.NOT_SERVING,
        )
        self.servicer.set(name, serving if ok else not_serving)

    def serving(self) -> None:
        for name in ("", *SERVICE_NAMES):
            self._set(name, True)

    def report_components(self) -> None:
        try:
            self.engine.storage.metadata.ping()
            self._set("storage", True)
        except Exception:
            self._set("storage", False)
        probe = getattr(self.sandbox, "healthy", None)
        healthy = probe is None or probe(timeout=1.0)
        self._set("sandbox", healthy)
        if healthy:
            self.engine.records.ceilings.refresh(self.sandbox)  # the pool's caps (control/budgets.py)
        self._set("sandbox_hardened", self.hardened)

    def probe_provider_forever(self, stop: threading.Event) -> None:
        """The provider's health from a real request every few seconds; a change is logged."""
        last: bool | None = None
        while True:
            # scripted (or a test double): nothing remote to ask
            remote = getattr(self.engine.provider, "name", "") == "openai"
            result = probe_provider(self.settings) if remote else None
            ok = result is None or result.ok
            self._set("provider", ok)
            if result is not None and ok != last:
                (log.info if ok else log.error)("provider_probe", ok=ok, detail=result.detail)
            last = ok
            if stop.wait(PROBE_PERIOD_SECONDS):
                return


def _start_background(
    stop: threading.Event,
    engine: ExecutionEngine,
    health_report: _Health,
    reaper: SessionReaper,
    sweep_seconds: float,
    settings: Settings,
    session_sweep_seconds: float | None,
) -> None:
    """The takeover sweep (with the component health), the provider probe and
    the session sweep (deleted and expired sessions' data, lifecycle.py)."""

    def sweep() -> None:
        health_report.report_components()
        while not stop.wait(sweep_seconds):
            try:
                health_report.report_components()
                engine.recover_orphans()
            except Exception:  # a failed sweep retries next period
                continue

    threading.Thread(target=sweep, name="takeover-sweep", daemon=True).start()
    threading.Thread(
        target=health_report.probe_provider_forever, args=(stop,), name="provider-probe", daemon=True
    ).start()
    interval = settings.session_sweep_seconds if session_sweep_seconds is None else session_sweep_seconds
    if interval > 0:
        threading.Thread(target=reaper.run, args=(stop, interval), name="session-sweep", daemon=True).start()
