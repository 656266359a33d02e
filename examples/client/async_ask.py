"""The asyncio client: several questions about one session at once, each answer verified.

RLM_API_KEY=$KEY uv run python examples/client/async_ask.py --url grpc://127.0.0.1:50051 $URIS
"""

from __future__ import annotations

import argparse
import asyncio
import os

from rlm_rs.client import AsyncClient

QUESTIONS = [
    "When was the Harrow Point light first lit?",
    "What did its lamp burn?",
    "Who was its first principal keeper?",
]


async def run(url: str, uris: list[str]) -> int:
    async with AsyncClient(url) as client:
        session = await client.sessions.create(docs=uris)
        answers = await asyncio.gather(*(session.ask(q) for q in QUESTIONS))
    for question, answer in zip(QUESTIONS, answers, strict=True):
        print(f"Q: {question}")
        print(f"A: {answer.text}")
        print(f"   {len(answer.citations)} citations, all verified: {answer.verified}")
    return 0 if all(a.verified for a in answers) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("RLM_URL", "http://127.0.0.1:8080"))
    parser.add_argument("uris", nargs="+", help="s3:// URIs printed by `rlm-rs upload`")
    args = parser.parse_args()
    return asyncio.run(run(args.url, args.uris))


if __name__ == "__main__":
    raise SystemExit(main())
