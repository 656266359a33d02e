"""A stand-in `grpc` module for the zygote and its workers: StatusCode only.

rlm_rs/errors.py (imported by the executor) builds its table from
grpc.StatusCode at import time. Loading the real grpc there would put gRPC's
C core in the sandbox's trusted base and ~27 MB more resident memory in every
fork (fork cost grows with it), against the rule that the zygote never imports
gRPC. This module gives errors.py the one enum it reads; any other use fails
loudly. It must never be installed in a process that speaks gRPC.
"""

from __future__ import annotations

import enum
import sys
import types
from typing import Any


class StatusCode(enum.Enum):
    OK = (0, "ok")
    CANCELLED = (1, "cancelled")
    UNKNOWN = (2, "unknown")
    INVALID_ARGUMENT = (3, "invalid argument")
    DEADLINE_EXCEEDED = (4, "deadline exceeded")
    NOT_FOUND = (5, "not found")
    ALREADY_EXISTS = (6, "already exists")
    PERMISSION_DENIED = (7, "permission denied")
    RESOURCE_EXHAUSTED = (8, "resource exhausted")
    FAILED_PRECONDITION = (9, "failed precondition")
    ABORTED = (10, "aborted")
    OUT_OF_RANGE = (11, "out of range")
    UNIMPLEMENTED = (12, "unimplemented")
    INTERNAL = (13, "internal")
    UNAVAILABLE = (14, "unavailable")
    DATA_LOSS = (15, "data loss")
    UNAUTHENTICATED = (16, "unauthenticated")


def _missing(name: str) -> Any:
    raise AttributeError(f"grpc.{name} is not available in the sandbox zygote")


def install() -> bool:
    """Make `import grpc` yield the stand-in; False if real grpc is already loaded."""
    if "grpc" in sys.modules:
        return False
    module = types.ModuleType("grpc", __doc__)
    module.StatusCode = StatusCode  # type: ignore[attr-defined]
    module.__getattr__ = _missing  # type: ignore[method-assign]
    sys.modules["grpc"] = module
    return True
