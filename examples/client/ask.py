"""Ask a question about uploaded documents and print the answer with its verified citations.

    KEY=$(uv run rlm-rs keys create --tenant acme | tail -1)
    URIS=$(uv run rlm-rs upload --tenant acme rlm_rs/appliance/demo_corpus/*)
    RLM_API_KEY=$KEY uv run python examples/client/ask.py --url http://127.0.0.1:8080 $URIS

`--url grpc://127.0.0.1:50051` asks the same over gRPC. Exits 1 unless every citation verifies.
"""

from __future__ import annotations

import argparse
import os

from rlm_rs.client import Client, Session


def show_progress(session: Session) -> None:
    parsed, total = session.ingest_progress
    print(f"session {session.session_id}: {session.status} ({parsed}/{total} documents parsed)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("RLM_URL", "http://127.0.0.1:8080"))
    parser.add_argument("--question", default="When was the Harrow Point light first lit, and who kept it?")
    parser.add_argument("uris", nargs="+", help="s3:// URIs printed by `rlm-rs upload`")
    args = parser.parse_args()

    with Client(args.url) as client:  # the key comes from RLM_API_KEY
        session = client.sessions.create(docs=args.uris, progress=show_progress)
        answer = session.ask(args.question)

    print(f"transport: {client.transport}")
    print(f"answer: {answer.text}")
    for number, citation in enumerate(answer.citations, start=1):
        mark = "verified" if citation.verified else "NOT VERIFIED"
        where = f"{citation.source_name} {citation.start_char}-{citation.end_char}"
        print(f"[{number}] {where} {mark}: {citation.text}")
    return 0 if answer.verified else 1


if __name__ == "__main__":
    raise SystemExit(main())
