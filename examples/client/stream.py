"""Watch an execution live: print each event as it happens, then the verified answer.

    RLM_API_KEY=$KEY uv run python examples/client/stream.py --url http://127.0.0.1:8080 $URIS

Over REST the events are Server-Sent Events, over gRPC (`--url grpc://…`) a
WatchExecution stream; either way a dropped stream resumes after the last event.
"""

from __future__ import annotations

import argparse
import os

from rlm_rs.client import Client


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("RLM_URL", "http://127.0.0.1:8080"))
    parser.add_argument("--question", default="What did the Harrow Point lamp burn?")
    parser.add_argument("uris", nargs="+", help="s3:// URIs printed by `rlm-rs upload`")
    args = parser.parse_args()

    with Client(args.url) as client:
        session = client.sessions.create(docs=args.uris)
        stream = session.ask(args.question, stream=True)
        print(f"execution {stream.execution_id}")
        for event in stream:
            detail = ""
            if event.type == "root_reply":
                detail = f"{event.data.get('chars')} chars from {event.data.get('model')}"
            elif event.type == "step_result":
                detail = "ok" if event.data.get("success") else f"failed: {event.data.get('error')}"
            elif event.type == "status":
                detail = str(event.data.get("status"))
            print(f"event {event.event_id} turn {event.turn_index} {event.type} {detail}".rstrip())
        answer = stream.answer
    print(f"answer: {answer.text}")
    print(f"citations: {len(answer.citations)}, all verified: {answer.verified}")
    return 0 if answer.verified else 1


if __name__ == "__main__":
    raise SystemExit(main())
