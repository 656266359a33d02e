"""Upload local files, ask about them, then list recent sessions and executions.

    KEY=$(uv run rlm-rs keys create --tenant acme | tail -1)
    RLM_API_KEY=$KEY uv run python examples/client/files.py --url http://127.0.0.1:8080 \\
        rlm_rs/appliance/demo_corpus/*

The files are streamed to the appliance (POST /v1/uploads, or the gRPC Upload
stream with `--url grpc://127.0.0.1:50051`), the session is created and
waited for in the same call. Exits 1 unless every citation verifies.
"""

from __future__ import annotations

import argparse
import os

from rlm_rs.client import Client, Session, UploadProgress


def show_progress(event: UploadProgress | Session) -> None:
    if isinstance(event, UploadProgress):
        if event.done:
            print(f"uploaded {event.file_name} ({event.index + 1}/{event.files}, {event.sent_bytes} bytes)")
    else:
        parsed, total = event.ingest_progress
        print(f"session {event.session_id}: {event.status} ({parsed}/{total} documents parsed)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("RLM_URL", "http://127.0.0.1:8080"))
    parser.add_argument("--question", default="When was the Harrow Point light first lit, and who kept it?")
    parser.add_argument("files", nargs="+", help="local files (PDF, DOCX, HTML, Markdown, text)")
    args = parser.parse_args()

    with Client(args.url) as client:  # the key comes from RLM_API_KEY
        session = client.sessions.create(files=args.files, progress=show_progress)
        answer = session.ask(args.question)
        print(f"answer: {answer.text}")
        for number, citation in enumerate(answer.citations, start=1):
            mark = "verified" if citation.verified else "NOT VERIFIED"
            print(f"[{number}] {citation.source_name} {mark}")
        print("recent sessions:")
        for listed in client.sessions.list(limit=3):
            print(f"  {listed.session_id} {listed.status} {len(listed.docs)} documents")
        print(f"executions of {session.session_id}:")
        for execution in client.executions.list(session_id=session.session_id):
            print(f"  {execution.execution_id} {execution.status}")
    return 0 if answer.verified else 1


if __name__ == "__main__":
    raise SystemExit(main())
