"""rlm_rs/codec.py: the project's one JSON shape, and reading records stored in
protobuf's own JSON shape before it existed."""

from __future__ import annotations

from google.protobuf import json_format

from rlm_rs import codec
from rlm_rs.v1 import common_pb2, execution_pb2


def _ref() -> common_pb2.SpanRef:
    return common_pb2.SpanRef(
        tenant_id="t",
        session_id="s",
        doc_id="d",
        doc_index=0,
        start_char=0,
        end_char=2**40,
        checksum="sha256:0",
    )


def test_snake_case_real_ints_and_zeros_kept() -> None:
    assert codec.to_json(_ref()) == {
        "tenant_id": "t", "session_id": "s", "doc_id": "d", "doc_index": 0, "start_char": 0,
        "end_char": 2**40, "checksum": "sha256:0",
    }  # fmt: skip


def test_unset_optional_fields_and_messages_are_null() -> None:
    request = codec.to_json(execution_pb2.RunStepRequest(execution_id="e"))
    assert request["state"] is None and request["options"] is None
    assert codec.to_json(common_pb2.Final())["answer"] is None


def test_budget_overrides_name_only_what_they_set() -> None:
    """Budgets is `(json_omit_unset)`: an explicit zero is kept, an unset budget left out;
    a child's overrides (RlmRequest.budgets) read back the same, records stored
    as JSON text before (`budgets_json`) included."""
    assert codec.to_json(common_pb2.Budgets(max_turns=0)) == {"max_turns": 0}
    request = common_pb2.RlmRequest(
        key="k", question="q", budgets=common_pb2.Budgets(max_turns=3, max_depth=0)
    )
    data = codec.to_json(request)
    assert data["type"] == "rlm" and data["budgets"] == {"max_turns": 3, "max_depth": 0}
    assert codec.parse(common_pb2.RlmRequest, data) == request
    assert codec.to_json(common_pb2.RlmRequest(key="k"))["budgets"] is None
    stored_before = {"type": "rlm", "key": "k", "question": "q", "budgets": {"max_turns": 3, "max_depth": 0}}
    assert codec.parse(common_pb2.RlmRequest, stored_before) == request
    full = codec.to_json(common_pb2.Budgets(**{f.name: 1 for f in common_pb2.Budgets.DESCRIPTOR.fields}))
    assert len(full) == len(common_pb2.Budgets.DESCRIPTOR.fields)  # an execution's budgets: every one


def test_json_text_fields_are_values_under_the_name_without_suffix() -> None:
    llm = codec.to_json(common_pb2.LlmRequest(key="k", metadata_json='{"n":1}'))
    assert llm["metadata"] == {"n": 1} and "metadata_json" not in llm
    back = codec.parse(common_pb2.LlmRequest, llm)
    assert back.metadata_json == '{"n":1}'


def test_round_trip_through_json() -> None:
    requests = common_pb2.ToolRequests(
        llm=[common_pb2.LlmRequest(key="a", prompt="p", max_tokens=5, metadata_json='{"x":[1,2]}')],
        search=[common_pb2.SearchRequest(key="s", query="q", k=3)],
    )
    assert codec.parse(common_pb2.ToolRequests, codec.to_json(requests)) == requests


def test_reads_records_stored_in_protobufs_json_shape() -> None:
    """Citations and trace spans stored before the codec: camelCase, int64 as
    strings, zero fields dropped."""
    for old in (
        json_format.MessageToDict(_ref()),
        json_format.MessageToDict(_ref(), preserving_proto_field_name=True),
    ):
        assert isinstance(old.get("endChar", old.get("end_char")), str) and "doc_index" not in old
        assert codec.parse(common_pb2.SpanRef, old) == _ref()


def test_unknown_names_are_ignored_and_bad_values_refused() -> None:
    assert codec.parse(common_pb2.Span, {"doc_index": 2, "whatever": 1}).doc_index == 2
    for bad in ({"doc_index": "x"}, {"doc_index": [1]}):
        try:
            codec.parse(common_pb2.Span, bad)
        except (TypeError, ValueError):
            continue
        raise AssertionError(f"accepted {bad}")


def test_the_protos_json_options_give_the_contracts_presentation() -> None:
    step = codec.to_json(execution_pb2.StepRecord(span_log=[common_pb2.Span(doc_index=1, end_char=3)]))
    assert step["span_log"] == [{"doc_index": 1, "start_char": 0, "end_char": 3, "tag": None}]
    assert step["final"] == {"is_final": False, "answer": None}  # (json_empty_when_unset)
    assert step["tool_requests"] == {"llm": [], "search": [], "llm_batch": [], "rlm": []}
    requests = codec.to_json(common_pb2.ToolRequests(search=[common_pb2.SearchRequest(key="k")]))
    assert list(requests["search"][0])[:2] == ["type", "key"] and requests["search"][0]["type"] == "search"
    assert codec.parse(common_pb2.SearchRequest, requests["search"][0]).key == "k"  # `type` is ignored
    execution = codec.to_json(execution_pb2.Execution(execution_id="e"))
    assert execution["completed_at"] is None and execution["trace_s3_uri"] is None
