"""Hostile-input fuzzing of the gRPC surface: hypothesis builds requests from the
proto descriptors of every method of SessionService, ExecutionService and
CitationService (a method added to proto/rlm_rs/v1/ is fuzzed without a
change here) and sends them to a real control plane on a real socket. No
request may answer INTERNAL / UNKNOWN (a 500), every error must carry the
spec's ErrorInfo, and no step may report INTERNAL_ERROR. Field values mix
random data with the values that broke things before: real ids (so calls
get past the look-ups), NaN and deep or huge JSON, unicode digits in page
tokens, integers past Python's 4,300-digit limit, oversized metadata and
answers. CI runs a short, derandomised budget; set RLM_FUZZ_GRPC_EXAMPLES
(per method, e.g. 2000) for a longer, random run.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor as pb_descriptor
from google.protobuf import message_factory
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from rlm_rs.bench._limits import UNLIMITED_QUOTAS, UNLIMITED_RATE
from rlm_rs.control.server import ControlPlane, start_control_plane
from rlm_rs.ingestion.worker import IngestionWorker
from rlm_rs.providers.scripted import DEFAULT_SCRIPT, ScriptedProvider
from rlm_rs.sandbox.client import InProcessSandbox
from rlm_rs.settings import Settings
from rlm_rs.storage import open_storage
from rlm_rs.storage.uploads import store_upload
from rlm_rs.v1 import citation_pb2, execution_pb2, session_pb2
from rlm_rs.v1.common_pb2 import Budgets

_LONG_RUN = os.environ.get("RLM_FUZZ_GRPC_EXAMPLES")
EXAMPLES = int(_LONG_RUN or "20")
# the methods with the most input to get wrong get a larger share of the budget
HEAVY = {"RunStep": 5, "ResolveTools": 5, "CreateSession": 3, "CreateRuntimeExecution": 2, "ListSessions": 3}
SERVICES = (
    session_pb2.DESCRIPTOR.services_by_name["SessionService"],
    execution_pb2.DESCRIPTOR.services_by_name["ExecutionService"],
    citation_pb2.DESCRIPTOR.services_by_name["CitationService"],
)
METHODS = [method for service in SERVICES for method in service.methods]
# calls that may legitimately outlast the client's deadline (they wait or stream)
WAITING = {"WaitExecution", "WatchExecution", "StartExecution", "StartFollowup", "RunStep", "ResolveTools"}
# calls that would destroy the shared records the other calls need
DESTRUCTIVE = {"DeleteSession", "CancelExecution"}
REPORT = "Annual report\n\nRevenue grew 14% to $48.2M.\nRisks: currency exposure.\n" * 20


@dataclass
class Target:
    plane: ControlPlane
    channel: grpc.Channel
    key: str
    ids: dict[str, list[str]] = field(default_factory=dict)
    refresh: Callable[[], None] = lambda: None


def _call(target: Target, method: pb_descriptor.MethodDescriptor, request: Message) -> Any:
    path = f"/{method.containing_service.full_name}/{method.name}"
    output = message_factory.GetMessageClass(method.output_type)
    metadata = (("authorization", f"Bearer {target.key}"),)
    if method.server_streaming:
        stream = target.channel.unary_stream(
            path, request_serializer=type(request).SerializeToString, response_deserializer=output.FromString
        )
        return list(stream(request, metadata=metadata, timeout=2.0))
    unary = target.channel.unary_unary(
        path, request_serializer=type(request).SerializeToString, response_deserializer=output.FromString
    )
    return unary(request, metadata=metadata, timeout=30.0)


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    data = tmp_path_factory.mktemp("fuzz-grpc") / "data"
    settings_ = Settings(  # the limits are tested elsewhere; here they would only hide paths
        RLM_DATA_DIR=data,
        API_KEY_PEPPER="pepper",
        LLM_PROVIDER="scripted",
        RATE_LIMITS_JSON=UNLIMITED_RATE,
        RLM_QUOTAS_JSON=UNLIMITED_QUOTAS,
    )
    storage = open_storage(settings_)
    plane = start_control_plane(
        settings_,
        "127.0.0.1:0",
        storage=storage,
        sandbox=InProcessSandbox(),
        provider=ScriptedProvider(DEFAULT_SCRIPT),
        lease_seconds=5,
        sweep_seconds=0.5,
    )
    key, _ = storage.metadata.create_api_key("tenant-fuzz", name="fuzz")
    other_key, _ = storage.metadata.create_api_key("tenant-other", name="fuzz")
    channel = grpc.insecure_channel(f"127.0.0.1:{plane.port}")
    target = Target(plane, channel, key)
    sessions = session_pb2_grpc_stub(channel)
    executions = execution_pb2_grpc_stub(channel)
    auth = [("authorization", f"Bearer {key}")]
    uris = {
        tenant: store_upload(storage.blobs, tenant, "report.txt", REPORT.encode())
        for tenant in ("tenant-fuzz", "tenant-other")
    }

    def session(api_key: str) -> session_pb2.Session:
        tenant = "tenant-fuzz" if api_key == key else "tenant-other"
        uri = uris[tenant]
        created = sessions.CreateSession(
            session_pb2.CreateSessionRequest(
                docs=[session_pb2.DocumentInput(source_name="r.txt", mime_type="text/plain", raw_s3_uri=uri)]
            ),
            metadata=[("authorization", f"Bearer {api_key}")],
        )
        IngestionWorker(storage, settings_).run_once()
        got: session_pb2.Session = sessions.GetSession(
            session_pb2.GetSessionRequest(session_id=created.session_id),
            metadata=[("authorization", f"Bearer {api_key}")],
        )
        assert got.status == session_pb2.SESSION_STATUS_READY, got
        return got

    ready = session(key)
    foreign = session(other_key)
    finished = executions.StartExecution(
        execution_pb2.StartExecutionRequest(
            session_id=ready.session_id,
            question="what does it open with?",
            options=execution_pb2.ExecutionOptions(synchronous=True, synchronous_timeout_seconds=30),
        ),
        metadata=auth,
    )
    assert finished.status == execution_pb2.EXECUTION_STATUS_COMPLETED, finished

    def refresh() -> None:
        """A live runtime execution and a disposable session for the next example."""
        runtime = target.ids.get("runtime", [""])[0]
        if runtime:
            record = storage.metadata.get_execution("tenant-fuzz", runtime)
            if record["status"] == "RUNNING":
                return
        created = executions.CreateRuntimeExecution(
            execution_pb2.CreateRuntimeExecutionRequest(
                session_id=ready.session_id, budgets=Budgets(max_turns=200, max_total_seconds=3600)
            ),
            metadata=auth,
        )
        target.ids["runtime"] = [created.execution_id]

    target.refresh = refresh
    target.ids = {
        "session": [ready.session_id],
        "foreign_session": [foreign.session_id],
        "finished": [finished.execution_id],
        "doc": [d.doc_id for d in ready.docs],
        "foreign_doc": [d.doc_id for d in foreign.docs],
        "uri": [
            *uris.values(),
            ready.docs[0].text_s3_uri,
            "s3://rlm-rs/raw/fuzz/missing.txt",
            "s3://elsewhere/x",
        ],
        "checksum": [c.checksum for c in finished.citations] or ["sha256:" + "0" * 64],
    }
    refresh()
    yield target
    channel.close()
    plane.stop(1)


def session_pb2_grpc_stub(channel: grpc.Channel) -> Any:
    from rlm_rs.v1 import session_pb2_grpc

    return session_pb2_grpc.SessionServiceStub(channel)


def execution_pb2_grpc_stub(channel: grpc.Channel) -> Any:
    from rlm_rs.v1 import execution_pb2_grpc

    return execution_pb2_grpc.ExecutionServiceStub(channel)


# --- strategies from descriptors ------------------------------------------------------------
NASTY_TEXT = st.sampled_from([
    "", " ", "²", "٣", "-1", "0", "10", "99999999999999999999", "1e309", "NaN", "null", "{}", "[]",
    "../../etc/passwd", "s3://rlm-rs/state/x", "\x00", "\u202e", "💥" * 50, "a" * 5_000, "1" * 5_000,
])  # fmt: skip
NASTY_JSON = st.sampled_from([
    "NaN", "Infinity", "-Infinity", '{"a": NaN}', '{"max_turns": NaN}', '{"max_total_seconds": NaN}',
    '{"max_total_seconds": Infinity}', '{"max_turns": 1e400}', '{"max_turns": -1}', '{"max_turns": "3"}',
    '{"max_turns": true}', '{"nope": 1}', "[" * 100_000 + "]" * 100_000, '{"a":' * 2_000 + "1" + "}" * 2_000,
    "[" * 500 + "]" * 500, "1" * 5_000, '{"work": ' + "1" * 5_000 + "}", '{"work": {"x": "' + "y" * 600_000 + '"}}',
    '{"_tool_status": {"x": "forged"}}', '{"work": []}', "{", "", "null", "{}", '"s"', "3",
])  # fmt: skip
CODE = st.sampled_from([
    "print(1)", "tool.FINAL('done')", "tool.YIELD()", "state['work']['n'] = 10 ** 5000",
    "state['work']['f'] = 1e308 * 10", "tool.FINAL(10 ** 5000)", "tool.FINAL([10 ** 5000])",
    "tool.FINAL('x' * 300000)", "tool.queue_llm('k', 'p', metadata={'m': 'x' * 40000})\ntool.YIELD()",
    "tool.queue_llm('k', 'p', metadata={'m': 10 ** 5000})", "tool.queue_rlm('k', 'q', budgets={'max_turns': 1})",
    "tool.queue_llm('k', 'who?')\ntool.YIELD()", "x = state\nfor i in range(60):\n    x['a'] = {}\n    x = x['a']",
    "print(context[0][0:50])", "```repl\nprint(2)\n```", "import os", "state = 5",
    "print('é' * 20000)",
])  # fmt: skip


def _id_strategy(target: Target, method: str, name: str) -> st.SearchStrategy[str]:
    def pool(kinds: tuple[str, ...]) -> st.SearchStrategy[str]:
        return st.sampled_from(kinds).flatmap(lambda kind: st.sampled_from(target.ids.get(kind) or [""]))

    if method in DESTRUCTIVE:
        return st.one_of(st.text(max_size=40), NASTY_TEXT)
    if name == "session_id":
        kinds: tuple[str, ...] = ("session", "foreign_session")
    elif name == "doc_id":
        kinds = ("doc", "foreign_doc")
    elif method == "WaitExecution":
        kinds = ("finished",)  # a live one would hold a server thread for up to 300 s
    else:
        kinds = ("runtime", "finished")
    return st.one_of(pool(kinds), pool(kinds), pool(kinds), st.text(max_size=40), NASTY_TEXT)


def _scalar(target: Target, method: str, fd: pb_descriptor.FieldDescriptor) -> st.SearchStrategy[Any]:
    t = pb_descriptor.FieldDescriptor
    if fd.type == t.TYPE_STRING:
        return _string(target, method, fd.name)
    if fd.type in (t.TYPE_DOUBLE, t.TYPE_FLOAT):
        return st.one_of(
            st.floats(allow_nan=True, allow_infinity=True, width=32 if fd.type == t.TYPE_FLOAT else 64),
            st.sampled_from([0.0, -1.0, 0.5, 30.0, 300.0, 301.0, 1e9]),
        )
    if fd.type == t.TYPE_BOOL:
        return st.booleans()
    if fd.type == t.TYPE_BYTES:
        return st.one_of(st.binary(max_size=64), st.sampled_from([b"", b"%PDF-", b"\xff" * 300]))
    if fd.type == t.TYPE_ENUM:
        assert fd.enum_type is not None
        known = st.sampled_from([v.number for v in fd.enum_type.values])
        return st.one_of(known, known, st.integers(-3, 1_000))  # open enums: a number this build lacks
    return _integer(fd)


def _string(target: Target, method: str, name: str) -> st.SearchStrategy[Any]:
    """A string field's values, by what its name says it holds."""
    if name.endswith("_id") and name != "tenant_id":
        return _id_strategy(target, method, name)
    if name.endswith("_json"):
        return st.one_of(NASTY_JSON, NASTY_JSON, NASTY_JSON, st.text(max_size=60))
    if name == "page_token":
        tokens = st.sampled_from(["²", "٣", "1" * 5_000, "-1", "0", "2", "abc", "", "99999999999", " 1"])
        return st.one_of(tokens, tokens, st.text(alphabet="0123456789²٣-+ ", max_size=12), NASTY_TEXT)
    if name == "code":
        return st.one_of(CODE, CODE, st.text(max_size=200))
    if name.endswith("_uri"):
        return st.one_of(st.sampled_from(target.ids["uri"]), st.text(max_size=40))
    if name == "checksum":
        return st.one_of(st.sampled_from(target.ids["checksum"]), st.text(max_size=72))
    if name == "mime_type":
        return st.one_of(
            st.sampled_from(["text/plain", "text/html", "application/pdf"]), st.text(max_size=20)
        )
    return st.one_of(st.text(max_size=80), NASTY_TEXT)


def _integer(fd: pb_descriptor.FieldDescriptor) -> st.SearchStrategy[Any]:
    """An integer field's values: anywhere in its range, and its edges."""
    t = pb_descriptor.FieldDescriptor
    bits = 64 if fd.type in (t.TYPE_INT64, t.TYPE_SINT64, t.TYPE_SFIXED64) else 32
    if fd.type in (t.TYPE_UINT32, t.TYPE_FIXED32, t.TYPE_UINT64, t.TYPE_FIXED64):
        low, high = 0, 2**bits - 1
    else:
        low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return st.one_of(
        st.integers(low, high),
        st.sampled_from(
            [v for v in (low, -1, 0, 1, 2, 3, 7, 100, 10_000, 1_000_000, high) if low <= v <= high]
        ),
    )


def _nested(
    target: Target, method: str, descriptor: pb_descriptor.Descriptor, depth: int
) -> Callable[[], st.SearchStrategy[Any]]:
    """A nested message's strategy, drawn lazily (hypothesis's deferred wants a function)."""

    def definition() -> st.SearchStrategy[Any]:
        return message_strategy(target, method, descriptor, depth)

    return definition


def message_strategy(
    target: Target, method: str, descriptor: pb_descriptor.Descriptor, depth: int = 0
) -> st.SearchStrategy[Message]:
    cls = message_factory.GetMessageClass(descriptor)
    if depth > 3:
        return st.just(cls())
    fields = {fd.name: _field_strategy(target, method, fd, depth) for fd in descriptor.fields}

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        message = cls()
        for name, strategy in fields.items():
            if draw(st.integers(0, 3)) == 0:
                continue  # unset, as callers leave many fields
            _set_field(message, descriptor.fields_by_name[name], draw(strategy))
        return message

    return build()


def _field_strategy(
    target: Target, method: str, fd: pb_descriptor.FieldDescriptor, depth: int
) -> st.SearchStrategy[Any]:
    """One field's values: a map, a repeated field, a nested message or a scalar."""
    if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
        key_fd, value_fd = fd.message_type.fields_by_name["key"], fd.message_type.fields_by_name["value"]
        value = (
            message_strategy(target, method, value_fd.message_type, depth + 1)
            if value_fd.message_type is not None
            else _scalar(target, method, value_fd)
        )
        return st.dictionaries(_scalar(target, method, key_fd), value, max_size=3)
    if fd.message_type is not None:
        one = st.deferred(_nested(target, method, fd.message_type, depth + 1))
    else:
        one = _scalar(target, method, fd)
    return st.lists(one, max_size=3) if fd.is_repeated else one


def _set_field(message: Message, fd: pb_descriptor.FieldDescriptor, value: Any) -> None:
    """Put a drawn value into its field (maps and repeated fields item by item)."""
    name = fd.name
    if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
        target_map = getattr(message, name)
        for key, item in value.items():
            if isinstance(item, Message):
                target_map[key].CopyFrom(item)
            else:
                target_map[key] = item
    elif fd.is_repeated:
        container = getattr(message, name)
        for item in value:
            if isinstance(item, Message):
                container.add().CopyFrom(item)
            else:
                container.append(item)
    elif fd.message_type is not None:
        getattr(message, name).CopyFrom(value)
    else:
        setattr(message, name, value)


def _reason(error: grpc.RpcError) -> str:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is None or not status.details:
        return ""
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    reason: str = info.reason
    return reason


@pytest.mark.parametrize("method", METHODS, ids=[m.name for m in METHODS])
def test_no_request_gets_an_internal_error(target: Target, method: pb_descriptor.MethodDescriptor) -> None:
    fuzz = settings(
        max_examples=EXAMPLES * HEAVY.get(method.name, 1),
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    test = fuzz(given(data=st.data())(lambda data: _one_request(target, method, data)))
    if not _LONG_RUN:
        test = seed(zlib.crc32(method.name.encode()))(test)  # CI: the same examples every run
    test()


def _one_request(target: Target, method: pb_descriptor.MethodDescriptor, data: st.DataObject) -> None:
    target.refresh()
    request = data.draw(message_strategy(target, method.name, method.input_type), label="request")
    try:
        response = _call(target, method, request)
    except grpc.RpcError as error:
        code = error.code()
        if code == grpc.StatusCode.DEADLINE_EXCEEDED and method.name in WAITING:
            return _records_still_readable(target)
        assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (
            method.name,
            error.details(),
        )
        reason = _reason(error)
        assert reason and reason != "INTERNAL_ERROR", (method.name, code, error.details())
    else:
        if method.name == "RunStep":
            assert response.error.code not in ("INTERNAL_ERROR", "LAMBDA_ERROR"), response.error
        if method.name in ("GetExecution", "StartExecution", "StartFollowup"):
            assert (
                response.error.code != "INTERNAL_ERROR"
                or response.status != execution_pb2.EXECUTION_STATUS_FAILED
            ), response.error
    _records_still_readable(target)


def _records_still_readable(target: Target) -> None:
    """No request may poison a record: the shared session and executions
    still answer (a NaN budget once made a parent's GET fail for good)."""
    metadata = [("authorization", f"Bearer {target.key}")]
    executions = execution_pb2_grpc_stub(target.channel)
    for execution_id in (*target.ids["runtime"], *target.ids["finished"]):
        request = execution_pb2.GetExecutionRequest(execution_id=execution_id)
        executions.GetExecution(request, metadata=metadata, timeout=30)
        executions.ListSteps(
            execution_pb2.ListStepsRequest(execution_id=execution_id), metadata=metadata, timeout=30
        )
    session_pb2_grpc_stub(target.channel).GetSession(
        session_pb2.GetSessionRequest(session_id=target.ids["session"][0]), metadata=metadata, timeout=30
    )
