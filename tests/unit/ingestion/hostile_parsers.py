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
