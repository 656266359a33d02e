"""A real control plane on a real port (embedded storage in a temp dir, the
in-process sandbox, a scripted provider the test can program), plus helpers
to get a READY session through the real gRPC API and ingestion worker."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from rlm_rs.control.server import ControlPlane, start_control_plane
from rlm_rs.ingestion.worker import IngestionWorker
from rlm_rs.providers.scripted import ScriptedProvider
from rlm_rs.sandbox.client import InProcessSandbox, SandboxClient
from rlm_rs.settings import Settings
from rlm_rs.storage import open_storage
from rlm_rs.storage.uploads import store_upload
from rlm_rs.v1 import citation_pb2_grpc, execution_pb2, execution_pb2_grpc, session_pb2, session_pb2_grpc
from rlm_rs.v1.common_pb2 import Budgets

REPORT = (
    "Northwind Annual Report 2025\n\nRevenue grew 14% to $48.2M, driven by the Lisbon office.\n"
    "The board appointed Ana Souza as chief executive in March.\n\n"
    "Risks: currency exposure in São Paulo and Zürich; the data centre lease ends in 2027.\n"
)
NOTES = "Meeting notes\nDecision: ship v2 on 1 April.\nAction: Bo drafts the release note.\n"


@dataclass
class Api:
    plane: ControlPlane
    provider: ScriptedProvider
    settings: Settings
    key: str
    channel: grpc.Channel

    @property
    def sessions(self) -> session_pb2_grpc.SessionServiceStub:
        return session_pb2_grpc.SessionServiceStub(self.channel)

    @property
    def executions(self) -> execution_pb2_grpc.ExecutionServiceStub:
        return execution_pb2_grpc.ExecutionServiceStub(self.channel)

    @property
    def citations(self) -> citation_pb2_grpc.CitationServiceStub:
        return citation_pb2_grpc.CitationServiceStub(self.channel)

    def auth(self, key: str | None = None) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {key or self.key}"),)

    def ready_session(
        self, texts: list[str] | None = None, budgets_default: Budgets | None = None, **options: Any
    ) -> str:
        storage = self.plane.storage
        owner = storage.metadata.authenticate(self.key)
        assert owner is not None
        docs = []
        for index, text in enumerate(texts or [REPORT, NOTES]):
            uri = store_upload(storage.blobs, owner["tenant_id"], f"doc{index}.txt", text.encode("utf-8"))
            docs.append(
                session_pb2.DocumentInput(
                    source_name=f"doc{index}.txt", mime_type="text/plain", raw_s3_uri=uri
                )
            )
        created: session_pb2.Session = self.sessions.CreateSession(
            session_pb2.CreateSessionRequest(
                ttl_minutes=30,
                docs=docs,
                options=session_pb2.SessionOptions(**options),
                budgets_default=budgets_default,
            ),
            metadata=self.auth(),
        )
        IngestionWorker(storage, self.settings).run_once()
        return created.session_id

    def runtime_execution(self, **budgets: Any) -> str:
        """A runtime execution on a fresh ready session, with these budgets."""
        created: execution_pb2.Execution = self.executions.CreateRuntimeExecution(
            execution_pb2.CreateRuntimeExecutionRequest(
                session_id=self.ready_session(), budgets=Budgets(**budgets)
            ),
            metadata=self.auth(),
        )
        return created.execution_id


def error_code(error: grpc.RpcError) -> str:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, error
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    reason: str = info.reason
    return reason


@contextlib.contextmanager
def control_plane(tmp_path: Path, sandbox: SandboxClient | None = None, **env: Any) -> Iterator[Api]:
    """A control plane on a free port with a key for tenant-a; `sandbox`
    defaults to the in-process one; `env` adds settings by their variable
    names. The session sweeper does not run on its own (tests call
    `plane.reaper.sweep()`)."""
    settings = Settings(
        RLM_DATA_DIR=tmp_path / "data", API_KEY_PEPPER="pepper", LLM_PROVIDER="scripted", **env
    )
    storage = open_storage(settings)
    provider = ScriptedProvider({"executions": [], "sub": [], "default_sub": "no idea"})
    plane = start_control_plane(
        settings,
        "127.0.0.1:0",
        storage=storage,
        sandbox=sandbox or InProcessSandbox(),
        provider=provider,
        lease_seconds=5,
        sweep_seconds=0.5,
        session_sweep_seconds=0,
    )
    key, _ = storage.metadata.create_api_key("tenant-a", name="tests")
    channel = grpc.insecure_channel(f"127.0.0.1:{plane.port}")
    try:
        yield Api(plane, provider, settings, key, channel)
    finally:
        channel.close()
        plane.stop(1)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with control_plane(tmp_path) as ready:
        yield ready
