"""`rlm-rs bench search`: the shared search index artifact on a moto server and embedded.

For the demo corpus (rlm_rs/appliance/demo_corpus/) and a synthetic text of
`--text-mib` MiB, the real ingestion worker parses and publishes the
session's index artifact; then a fresh node (its own document cache) runs its
first search (artifact fetch + SHA-256 check + open + query) and `--queries`
more on its cached copy. Reports the artifact size, the publish time, and
wall and CPU time (this process) per query, first vs cached, with the
embedded back end in the same run. Never used by a deployment.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

DESCRIPTION = "search artifact size, publish time, first (fetch) vs cached query latency, moto and embedded"
QUERIES = ("colza oil lamp", "keeper storm log", "first lit 1852", "lantern glass", "visitors leaflet")
_WORDS = (
    "harbour",
    "lamp",
    "keeper",
    "storm",
    "colza",
    "oil",
    "lantern",
    "tide",
    "rock",
    "signal",
    "fog",
    "bell",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--queries", type=int, default=50, help="cached queries measured per corpus")
    parser.add_argument("--text-mib", type=float, default=4.0, help="size of the synthetic text corpus")


def _synthetic(mib: float) -> bytes:
    words, size, out = _WORDS, int(mib * 1024 * 1024), []
    total, index = 0, 0
    while total < size:
        line = " ".join(words[(index * 7 + j * 3) % len(words)] for j in range(12)) + f" {index}.\n"
        out.append(line)
        total += len(line)
        index += 1
    return "".join(out).encode()


def _corpus(name: str, mib: float) -> list[tuple[str, bytes, str]]:
    from rlm_rs.appliance.demo import MIME_TYPES, corpus_files

    if name == "demo":
        return [(p.name, p.read_bytes(), MIME_TYPES[p.suffix]) for p in corpus_files()]
    return [("synthetic.txt", _synthetic(mib), "text/plain")]


def _session(
    storage: Any, settings: Any, files: list[tuple[str, bytes, str]]
) -> tuple[dict[str, Any], float]:
    """A READY search session of `files` through the real worker; its publish time."""
    from rlm_rs.ingestion.worker import IngestionWorker
    from rlm_rs.storage.uploads import store_upload

    session_id = f"sess_{uuid.uuid4().hex[:10]}"
    for index, (name, data, mime) in enumerate(files):
        storage.metadata.put_document({
            "tenant_id": "bench", "session_id": session_id, "doc_id": f"doc_{index}", "doc_index": index,
            "source_name": name, "mime_type": mime, "ingest_status": "REGISTERED",
            "raw_s3_uri": store_upload(storage.blobs, "bench", name, data),
        })  # fmt: skip
    storage.metadata.put_session({"tenant_id": "bench", "session_id": session_id, "status": "CREATING",
                                  "options": {"enable_search": True}, "doc_count": len(files)})  # fmt: skip
    started = time.perf_counter()
    IngestionWorker(storage, settings).run_once()
    elapsed = time.perf_counter() - started
    session = dict(storage.metadata.get_session("bench", session_id))
    if session["status"] != "READY":
        raise RuntimeError(f"the bench session ended {session['status']}")
    return session, elapsed


def _timed(call: Any) -> tuple[float, float, Any]:
    cpu, wall = time.process_time(), time.perf_counter()
    result = call()
    return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000, result


def _measure(
    settings: Any, corpus: list[tuple[str, bytes, str]], queries: int, node_dir: Path
) -> dict[str, Any]:
    from rlm_rs.control.corpus import DocumentCache
    from rlm_rs.storage import open_storage
    from rlm_rs.storage.search import SearchIndex

    storage = open_storage(settings)
    storage.init()
    try:
        session, ingest_seconds = _session(storage, settings, corpus)
        index = SearchIndex(DocumentCache(storage, node_dir).verified_path)
        first_wall, first_cpu, hits = _timed(lambda: index.search(session, QUERIES[0]))
        walls, cpus = [], []
        for n in range(queries):
            wall, cpu, _ = _timed(lambda n=n: index.search(session, QUERIES[n % len(QUERIES)]))
            walls.append(wall)
            cpus.append(cpu)
    finally:
        storage.close()
    return {
        "input_bytes": sum(len(data) for _, data, _ in corpus),
        "text_chars": int(session.get("total_chars") or 0),
        "artifact_bytes": session["search_index"]["size"],
        "ingest_and_publish_s": round(ingest_seconds, 3),
        "first_query_ms": {"wall": round(first_wall, 2), "cpu": round(first_cpu, 2), "hits": len(hits)},
        "cached_query_ms": {
            "wall_median": round(statistics.median(walls), 3),
            "wall_p95": round(sorted(walls)[int(0.95 * (len(walls) - 1))], 3),
            "cpu_mean": round(statistics.fmean(cpus), 3),
        },
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from rlm_rs.bench._plane import moto_server
    from rlm_rs.settings import Settings

    results: dict[str, Any] = {}
    moto, endpoint = moto_server()
    try:
        with tempfile.TemporaryDirectory(prefix="rlm-bench-search-") as directory:
            root = Path(directory)
            for corpus_name in ("demo", "synthetic"):
                corpus = _corpus(corpus_name, args.text_mib)
                unique = uuid.uuid4().hex[:8]
                aws = Settings(
                    RLM_STORAGE_BACKEND="aws", RLM_DATA_DIR=root / f"aws-{unique}", API_KEY_PEPPER="bench",
                    AWS_ENDPOINT_URL=endpoint, AWS_REGION="us-east-1", DDB_TABLE_PREFIX=f"b{unique}_rlm_",
                    S3_BUCKET=f"rlm-bench-{unique}",
                )  # fmt: skip
                embedded = Settings(RLM_DATA_DIR=root / f"embedded-{unique}", API_KEY_PEPPER="bench")
                results[corpus_name] = {
                    "aws_moto": _measure(aws, corpus, args.queries, root / f"node-{unique}-aws"),
                    "embedded": _measure(embedded, corpus, args.queries, root / f"node-{unique}-emb"),
                }
    finally:
        moto.kill()  # it has nothing to flush
        moto.wait(10)
    return results
