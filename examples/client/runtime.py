"""Drive an execution step by step (runtime mode): read, queue a sub-call, resolve it, FINAL.

    RLM_API_KEY=$KEY uv run python examples/client/runtime.py --url http://127.0.0.1:8080 $URIS

Each step is Python run in the appliance's sandbox against the session's
documents; what the steps read becomes the answer's citations.
"""

from __future__ import annotations

import argparse
import os

from rlm_rs.client import Client

FIND = """
for doc in context:
    for hit in doc.find("first lit", max_hits=1):
        start = max(0, hit["start_char"] - 40)
        sentence = doc.slice(start, hit["end_char"] + 40, tag="evidence")
        state["work"]["evidence"] = state["work"].get("evidence", []) + [sentence]
        print(doc.name, hit["start_char"])
"""
SUMMARISE = """
evidence = "\\n".join(state["work"]["evidence"])
tool.queue_llm("summary", "Summarise for the demo: " + evidence)
tool.YIELD("waiting for the summary")
"""
FINISH = """
tool.FINAL(state["_tool_results"]["llm"]["summary"]["text"])
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("RLM_URL", "http://127.0.0.1:8080"))
    parser.add_argument("uris", nargs="+", help="s3:// URIs printed by `rlm-rs upload`")
    args = parser.parse_args()

    with Client(args.url) as client:
        session = client.sessions.create(docs=args.uris)
        with session.runtime(budgets={"max_turns": 5}) as rt:
            print(f"runtime execution {rt.execution_id}")
            step = rt.run(FIND).raise_for_error()
            print(f"step {step.turn_index}: read {len(step.span_log)} spans; stdout: {step.stdout.strip()!r}")
            step = rt.run(SUMMARISE).raise_for_error()
            print(f"step {step.turn_index}: queued {step.tool_requests.keys} ({step.yield_reason})")
            resolution = rt.resolve(step.tool_requests)
            print(f"resolved: {resolution.statuses}")
            step = rt.run(FINISH).raise_for_error()
            print(f"step {step.turn_index}: final={step.is_final}")
            answer = rt.answer()
        print(f"status: {answer.execution.status}")
        print(f"answer: {answer.text}")
        for citation in answer.citations:
            mark = "verified" if citation.verified else "NOT VERIFIED"
            print(f"cited {citation.source_name} {citation.start_char}-{citation.end_char} {mark}")
    return 0 if answer.verified else 1


if __name__ == "__main__":
    raise SystemExit(main())
