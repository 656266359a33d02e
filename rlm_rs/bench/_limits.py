"""Settings that lift the per-tenant limits, for benches that measure
throughput (`bench fairness` measures the limits themselves, at their
defaults). Never use these in a deployment."""

from __future__ import annotations

import json

UNLIMITED_RATE = json.dumps({"default": {"rate_per_second": 0}})
UNLIMITED_QUOTAS = json.dumps(
    {"default": {"running_executions": None, "live_sessions": None, "long_calls": None}}
)
