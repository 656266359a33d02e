"""Hostile parser targets for the isolation tests: module-level so the
forkserver child can import them (it cannot see a monkeypatch)."""

from __future__ import annotations

import os
import time
from typing import Any


def hang(kind: str, data: bytes, connection: Any) -> None:
    time.sleep(60)


def crash(kind: str, data: bytes, connection: Any) -> None:
    os._exit(9)


def report_limits(kind: str, data: bytes, connection: Any) -> None:
    """Apply the parse child's limits, then send them back as a failure's details."""
    import resource

    from rlm_rs.ingestion.parsers import limit_child

    limit_child()
    with open("/proc/self/oom_score_adj") as score:
        details = {"oom_score_adj": int(score.read()), "rlimit_as": resource.getrlimit(resource.RLIMIT_AS)[0]}
    connection.send(("failed", ("CORRUPT_DOCUMENT", "limits", details)))
