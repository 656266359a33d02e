"""`rlm-rs bench ratelimit`: what the shared per-tenant rate limit costs per call.

One RateLimiter over the metadata store (`control/admission.py`), on the
embedded back end and on a moto server over HTTP, with the per-process
bucket as the reference: wall and CPU time per admitted call and storage
requests per call, below the rate (tokens come in batches) and over it
(refusals are remembered until their retry delay). Never used by a deployment.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from rlm_rs.bench._plane import moto_server

DESCRIPTION = "cost per call of the per-tenant rate limit shared through the metadata store"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--calls", type=int, default=2000, help="calls below the rate, per back end")
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds of calls over the rate")


def _below(limiter: Any, calls: int) -> dict[str, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    for index in range(calls):
        limiter.take(f"below{index % 2}")  # two tenants: two buckets
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    requests = getattr(limiter, "store_requests", 0)
    return {"us_per_call": wall / calls * 1e6, "cpu_us_per_call": cpu / calls * 1e6,
            "bucket_takes_per_call": requests / calls}  # fmt: skip


def _over(limiter: Any, seconds: float) -> dict[str, float]:
    calls = admitted = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        calls += 1
        admitted += limiter.take("over") == 0
    requests = getattr(limiter, "store_requests", 0)
    return {"calls": calls, "admitted_per_second": admitted / seconds,
            "bucket_takes_per_call": requests / calls}  # fmt: skip


def _measure(shared: Any, args: argparse.Namespace) -> dict[str, Any]:
    from rlm_rs.control.admission import RateLimiter

    ample = {"default": {"rate_per_second": 1_000_000, "burst": 1_000_000}}
    tight = {"default": {"rate_per_second": 100, "burst": 10}}
    result: dict[str, Any] = {"below_rate": _below(RateLimiter(ample, shared), args.calls)}
    result["over_rate_100_per_s"] = _over(RateLimiter(tight, shared), args.seconds)
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    from rlm_rs.settings import Settings
    from rlm_rs.storage import open_storage

    results: dict[str, Any] = {"per_process": _measure(None, args)}
    moto, endpoint = moto_server()
    try:
        with tempfile.TemporaryDirectory(prefix="rlm-bench-ratelimit-") as directory:
            unique = uuid.uuid4().hex[:8]
            aws = Settings(
                RLM_STORAGE_BACKEND="aws", RLM_DATA_DIR=Path(directory) / "aws", AWS_ENDPOINT_URL=endpoint,
                AWS_REGION="us-east-1", DDB_TABLE_PREFIX=f"b{unique}_rlm_", S3_BUCKET=f"rlm-bench-{unique}",
                API_KEY_PEPPER="bench",
            )  # fmt: skip
            backends = {
                "embedded": Settings(RLM_DATA_DIR=Path(directory) / "embedded", API_KEY_PEPPER="bench"),
                "aws_moto": aws,
            }
            for name, settings in backends.items():
                storage = open_storage(settings)
                storage.init()
                try:
                    results[name] = _measure(storage.metadata, args)
                finally:
                    storage.close()
    finally:
        moto.kill()  # it has nothing to flush
        moto.wait(10)
    return results
