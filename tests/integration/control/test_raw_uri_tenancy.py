"""Cross-tenant reads through `raw_s3_uri`, over a real gRPC socket.

Tenant B owns an upload, a session with parsed text, an execution with an
offloaded state, a trace and a cached sub-call. Tenant A names each of those
objects as a raw document: every one is refused by the upload namespace
(rlm_rs/storage/uploads.py) exactly like a key that does not exist, and the
check never even looks at B's object (no existence oracle, no timing one).
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from rlm_rs.control.tools import ToolResolver
from rlm_rs.storage.uploads import store_upload
from rlm_rs.v1 import execution_pb2, session_pb2
from rlm_rs.v1.common_pb2 import LlmRequest
from tests.integration.control.conftest import NOTES, Api, error_code

BIG_STATE_AND_SUBCALL = (
    "state['work']['big'] = 'b' * 400000\ntool.queue_llm('gist', 'Summarise: ' + context[0][0:40])\n"
)


def _tenant_b_objects(api: Api) -> dict[str, str]:
    """Tenant B's upload and every internal object its work leaves behind."""
    storage = api.plane.storage
    key_b, _ = storage.metadata.create_api_key("tenant-b")
    upload = store_upload(storage.blobs, "tenant-b", "board-minutes.txt", b"Tenant B's confidential minutes.")
    session = api.sessions.CreateSession(
        session_pb2.CreateSessionRequest(
            docs=[session_pb2.DocumentInput(source_name="m.txt", mime_type="text/plain", raw_s3_uri=upload)]
        ),
        metadata=api.auth(key_b),
    )
    from rlm_rs.ingestion.worker import IngestionWorker

    IngestionWorker(storage, api.settings).run_once()
    view = api.sessions.GetSession(
        session_pb2.GetSessionRequest(session_id=session.session_id), metadata=api.auth(key_b)
    )
    execution = api.executions.CreateRuntimeExecution(
        execution_pb2.CreateRuntimeExecutionRequest(session_id=session.session_id), metadata=api.auth(key_b)
    )
    run = execution_pb2.RunStepRequest(
        execution_id=execution.execution_id,
        code=BIG_STATE_AND_SUBCALL,
        options=execution_pb2.RunStepOptions(resolve_tools=True),
    )
    assert api.executions.RunStep(run, metadata=api.auth(key_b)).success
    final = execution_pb2.RunStepRequest(execution_id=execution.execution_id, code="tool.FINAL('done')")
    api.executions.RunStep(final, metadata=api.auth(key_b))
    done = api.executions.GetExecution(
        execution_pb2.GetExecutionRequest(execution_id=execution.execution_id), metadata=api.auth(key_b)
    )
    assert done.status == execution_pb2.EXECUTION_STATUS_COMPLETED
    state = [k for k in storage.blobs.list("state/tenant-b/")]
    cache = [k for k in storage.blobs.list("cache/tenant-b/llm/")]
    assert state and cache
    return {
        "upload": upload,
        "parsed_text": view.docs[0].text_s3_uri,
        "parsed_offsets": view.docs[0].offsets_s3_uri,
        "state": storage.blobs.uri(state[0]),
        "trace": done.trace_s3_uri,
        "cache": storage.blobs.uri(cache[0]),
    }


def _create(api: Api, uri: str) -> tuple[grpc.StatusCode, str, str | None]:
    with pytest.raises(grpc.RpcError) as caught:
        api.sessions.CreateSession(
            session_pb2.CreateSessionRequest(
                docs=[session_pb2.DocumentInput(source_name="x.txt", mime_type="text/plain", raw_s3_uri=uri)]
            ),
            metadata=api.auth(),
        )
    return caught.value.code(), error_code(caught.value), caught.value.details()


def test_another_tenants_objects_are_refused_exactly_like_missing_ones(api: Api) -> None:
    foreign = _tenant_b_objects(api)
    storage = api.plane.storage
    for uri in foreign.values():  # the attack's targets really exist
        assert storage.blobs.head(uri.split("/", 3)[3]) is not None, uri
    own_parsed = api.sessions.GetSession(
        session_pb2.GetSessionRequest(session_id=api.ready_session()), metadata=api.auth()
    ).docs[0]
    probes: list[str] = []
    real_head = storage.blobs.head

    def head(key: str) -> Any:
        probes.append(key)
        return real_head(key)

    storage.blobs.head = head  # type: ignore[method-assign]
    try:
        missing = _create(api, storage.blobs.uri("raw/tenant-a/0000000000000000/never-uploaded.txt"))
        outcomes = {name: _create(api, uri) for name, uri in foreign.items()}
        outcomes["own_parsed_text"] = _create(api, own_parsed.text_s3_uri)  # internal, even its own
        outcomes["other_bucket"] = _create(api, "s3://another-bucket/" + foreign["upload"].split("/", 3)[3])
    finally:
        del storage.blobs.head
    assert missing == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "VALIDATION_ERROR",
        "docs[0].raw_s3_uri does not exist among this tenant's uploads",
    )
    for name, outcome in outcomes.items():
        assert outcome == missing, name
    # one HEAD per attempt, and never of the foreign or internal object
    assert len(probes) == 1 + len(outcomes)
    assert all(p.startswith("raw/tenant-a/") for p in probes), probes
    # and tenant A's own upload still works
    own = store_upload(storage.blobs, "tenant-a", "mine.txt", NOTES.encode())
    created = api.sessions.CreateSession(
        session_pb2.CreateSessionRequest(
            docs=[session_pb2.DocumentInput(source_name="mine.txt", mime_type="text/plain", raw_s3_uri=own)]
        ),
        metadata=api.auth(),
    )
    assert created.status == session_pb2.SESSION_STATUS_CREATING


def test_operator_grants_admit_a_shared_folder_for_one_tenant(tmp_path: Any) -> None:
    from rlm_rs.control.server import start_control_plane
    from rlm_rs.sandbox.client import InProcessSandbox
    from rlm_rs.settings import Settings
    from rlm_rs.storage import open_storage
    from rlm_rs.v1 import session_pb2_grpc

    settings = Settings(
        RLM_DATA_DIR=tmp_path / "data",
        API_KEY_PEPPER="pepper",
        RLM_RAW_PREFIXES_JSON={"tenant-a": ["shared/handbooks/"]},
    )
    storage = open_storage(settings)
    storage.blobs.put("shared/handbooks/h.txt", b"handbook")
    plane = start_control_plane(settings, "127.0.0.1:0", storage=storage, sandbox=InProcessSandbox())
    key_a, _ = storage.metadata.create_api_key("tenant-a")
    key_b, _ = storage.metadata.create_api_key("tenant-b")
    channel = grpc.insecure_channel(f"127.0.0.1:{plane.port}")
    try:
        stub = session_pb2_grpc.SessionServiceStub(channel)
        doc = session_pb2.DocumentInput(
            source_name="h.txt",
            mime_type="text/plain",
            raw_s3_uri=storage.blobs.uri("shared/handbooks/h.txt"),
        )
        request = session_pb2.CreateSessionRequest(docs=[doc])
        assert (
            stub.CreateSession(request, metadata=(("authorization", f"Bearer {key_a}"),)).status
            == session_pb2.SESSION_STATUS_CREATING
        )
        with pytest.raises(grpc.RpcError) as refused:
            stub.CreateSession(request, metadata=(("authorization", f"Bearer {key_b}"),))
        assert error_code(refused.value) == "VALIDATION_ERROR" and "does not exist" in str(
            refused.value.details()
        )
    finally:
        channel.close()
        plane.stop(1)


def test_subcall_cache_key_hashes_the_tenant_and_cannot_be_computed(api: Api) -> None:
    import hashlib

    from rlm_rs.canonical import canonical_json

    resolver: ToolResolver = api.plane.engine.resolver
    request = LlmRequest(key="k", prompt="Who was the first keeper?", max_tokens=100)
    digest_a = resolver.cache_key("tenant-a", "gpt-4o-mini", request)
    digest_b = resolver.cache_key("tenant-b", "gpt-4o-mini", request)
    assert digest_a != digest_b  # the tenant is inside the hash input, not only in the path
    spec_material = {"provider": "scripted", "model": "gpt-4o-mini", "temperature": 0.0, "max_tokens": 100,
                     "prompt": request.prompt}  # fmt: skip
    guesses = {
        hashlib.sha256(canonical_json(spec_material).encode()).hexdigest(),
        hashlib.sha256(canonical_json({**spec_material, "tenant_id": "tenant-a"}).encode()).hexdigest(),
    }
    assert digest_a not in guesses  # keyed by the server's pepper: a guessed prompt gives no key
