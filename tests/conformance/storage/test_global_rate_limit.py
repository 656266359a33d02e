"""Per-tenant rate limits hold across nodes: two RateLimiters (two nodes,
each with its own connection to one real store: a SQLite file, or a moto
server over HTTP) together admit no more than the configured rate, and a
refusal still tells the caller when to retry."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rlm_rs.control.admission import LOCAL_BATCH_MAX, Admission, CallSlots, RateLimiter
from rlm_rs.control.quotas import QuotaTable
from rlm_rs.errors import RlmError
from rlm_rs.storage import Storage, open_storage
from tests.conformance.storage.conftest import make_settings

RATE, BURST = 20.0, 10.0
CONFIG = {"default": {"rate_per_second": RATE, "burst": BURST}}


@pytest.fixture(params=["embedded", "aws"])
def two_nodes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Storage, Storage]]:
    endpoint = request.getfixturevalue("moto_endpoint") if request.param == "aws" else None
    settings = make_settings(request.param, tmp_path, endpoint)
    first, second = open_storage(settings), open_storage(settings)
    first.init()
    yield first, second
    first.close()
    second.close()


def _hammer(limiters: list[RateLimiter], seconds: float) -> tuple[int, int, float]:
    """Every limiter takes from two threads for `seconds`: (admitted, calls, elapsed)."""
    admitted, calls = [0], [0]
    lock = threading.Lock()
    start = time.time()

    def node(limiter: RateLimiter) -> None:
        while time.time() - start < seconds:
            allowed = limiter.take("t1") == 0
            with lock:
                admitted[0] += allowed
                calls[0] += 1
            if not allowed:
                time.sleep(0.005)

    threads = [threading.Thread(target=node, args=(lim,)) for lim in limiters for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return admitted[0], calls[0], time.time() - start


def test_two_nodes_together_admit_at_most_the_configured_rate(two_nodes: tuple[Storage, Storage]) -> None:
    a, b = (RateLimiter(CONFIG, store.metadata) for store in two_nodes)
    admitted, calls, elapsed = _hammer([a, b], 1.5)
    ceiling = BURST + RATE * elapsed
    assert admitted <= ceiling + 1, (admitted, ceiling)
    # the limit is a rate, not a wall: the nodes keep admitting as tokens come back
    assert admitted >= BURST + RATE * 0.5, (admitted, ceiling)
    assert calls > admitted  # the load was over the rate: some calls were refused
    assert a.store_requests > 0 and b.store_requests > 0  # both nodes spent from the one bucket


def test_below_the_rate_a_node_asks_the_store_once_per_batch(two_nodes: tuple[Storage, Storage]) -> None:
    ample = {"default": {"rate_per_second": 1000, "burst": 1000}}
    limiter = RateLimiter(ample, two_nodes[0].metadata)
    assert all(limiter.take("t1") == 0 for _ in range(100))
    assert limiter.store_requests <= 100 // LOCAL_BATCH_MAX + 1


def test_per_process_buckets_would_admit_twice_the_rate() -> None:
    """The defect the shared bucket fixes: two nodes' own buckets each admit
    the configured rate, so the same load gets through twice over."""
    admitted, _, elapsed = _hammer([RateLimiter(CONFIG), RateLimiter(CONFIG)], 1.0)
    assert admitted > BURST + RATE * elapsed + 1


def test_a_refusal_carries_its_retry_delay(two_nodes: tuple[Storage, Storage]) -> None:
    slow = {"default": {"rate_per_second": 0.5, "burst": 2}}
    nodes = [Admission(RateLimiter(slow, s.metadata), CallSlots(4), QuotaTable({})) for s in two_nodes]
    for admission in nodes:  # the burst of 2, one call on each node
        with admission.admit("t1", "GetSession", None):
            pass
    for admission in nodes:  # the second node sees the first's spend, and vice versa
        with pytest.raises(RlmError) as refused, admission.admit("t1", "GetSession", None):
            pass
        assert refused.value.code == "RATE_LIMITED"
        assert refused.value.details["retry_after_seconds"] in (1, 2)
    # another tenant has its own bucket
    with nodes[0].admit("t2", "GetSession", None):
        pass
