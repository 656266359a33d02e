"""What the engine stores is in the project's one JSON shape (rlm_rs/codec.py):
the execution record's citations and the trace's span logs have snake_case
names, integers as integers and zero fields kept (protobuf's JSON shape had
`docIndex` dropped for document 0 and `"startChar": "123"`)."""

from __future__ import annotations

import gzip
import json

from rlm_rs.canonical import canonical_json
from rlm_rs.v1 import execution_pb2
from tests.integration.control.conftest import REPORT, Api
from tests.integration.control.test_executions import FIND_AND_ANSWER, start


def test_citations_and_trace_spans_are_stored_snake_case_with_ints(api: Api) -> None:
    api.provider.script["executions"] = [{"match": "revenue", "root": [FIND_AND_ANSWER]}]
    execution = start(api, api.ready_session(), "How did revenue develop?")
    assert execution.status == execution_pb2.EXECUTION_STATUS_COMPLETED, execution.error
    start_char = REPORT.index("Revenue grew")
    record = api.plane.storage.metadata.get_execution("tenant-a", execution.execution_id)
    assert record is not None
    [citation] = record["citations"]
    assert citation["doc_index"] == 0 and citation["start_char"] == start_char
    assert citation["end_char"] == start_char + 26
    trace = json.loads(gzip.decompress(api.plane.storage.blobs.get(execution.trace_s3_uri.split("/", 3)[3])))
    spans = trace["turns"][0]["lambda"]["span_log"]
    assert {"doc_index": 0, "start_char": start_char, "end_char": start_char + 26} in [
        {k: s[k] for k in ("doc_index", "start_char", "end_char")} for s in spans
    ]
    text = canonical_json(trace)
    assert "docIndex" not in text and "startChar" not in text and f'"{start_char}"' not in text
    assert trace["final"]["citations"] == record["citations"]
