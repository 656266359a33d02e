"""Token and cost accounting: every provider call's usage -> USD.

Prices are USD per million tokens, per model, from RLM_PRICE_TABLE_JSON
(`{"gpt-4o": {"input_per_1m": 2.5, "output_per_1m": 10.0}, ...}`) over the
defaults below (list prices of common OpenAI models when this was written;
check yours). A model with no entry (tenants choose model names) is never
free on a real provider: it costs the table's `"*"` entry when the operator
set one, else the highest input and the highest output price in the table,
so `budgets.max_cost_usd` holds. Only the offline `scripted` provider costs 0.
`budgets.max_cost_usd` (0 = unlimited) ends an execution with BUDGET_EXCEEDED
once spent and refuses further sub-calls. Metric labels: `model_allowlist`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rlm_rs.domain import Consumed
from rlm_rs.observability import LLM_COST_USD, LLM_TOKENS
from rlm_rs.settings import Settings

UNKNOWN_MODEL = "*"  # the price-table entry for models it does not name

DEFAULT_PRICES: dict[str, dict[str, float]] = {
    "gpt-4o": {"input_per_1m": 2.50, "output_per_1m": 10.00},
    "gpt-4o-mini": {"input_per_1m": 0.15, "output_per_1m": 0.60},
    "gpt-4.1": {"input_per_1m": 2.00, "output_per_1m": 8.00},
    "gpt-4.1-mini": {"input_per_1m": 0.40, "output_per_1m": 1.60},
    "gpt-4.1-nano": {"input_per_1m": 0.10, "output_per_1m": 0.40},
}


class PriceTable:
    def __init__(self, overrides: dict[str, Any] | None = None, *, free: bool = False) -> None:
        self.free = free
        table = {**DEFAULT_PRICES, **(overrides or {})}
        fallback = table.pop(UNKNOWN_MODEL, None)
        self.prices = {m: p for m, p in table.items() if isinstance(p, dict)}
        self.unknown_price: dict[str, float] = (
            dict(fallback)
            if isinstance(fallback, dict)
            else {
                rate: max((float(p.get(rate, 0)) for p in self.prices.values()), default=0.0)
                for rate in ("input_per_1m", "output_per_1m")
            }
        )

    @classmethod
    def from_settings(cls, settings: Settings, provider_name: str | None = None) -> PriceTable:
        """The table a control plane uses: free only for the offline scripted provider."""
        name = provider_name or settings.llm_provider
        return cls(settings.price_table_json, free=name == "scripted")

    def price_of(self, model: str) -> dict[str, Any]:
        price = self.prices.get(model)
        if price is None:  # "gpt-4o-2024-08-06" is priced as "gpt-4o"
            base = max((m for m in self.prices if model.startswith(m)), key=len, default=None)
            price = self.prices.get(base) if base else None
        return self.unknown_price if price is None else price

    def cost_usd(self, model: str, input_tokens: int, output_tokens: int) -> float:
        if self.free:
            return 0.0
        price = self.price_of(model)
        return (
            input_tokens * float(price.get("input_per_1m", 0))
            + output_tokens * float(price.get("output_per_1m", 0))
        ) / 1_000_000

    def record(self, consumed: Consumed, model: str, input_tokens: int, output_tokens: int) -> float:
        """Add one call's usage and cost to `consumed`; returns the call's cost."""
        cost = self.cost_usd(model, input_tokens, output_tokens)
        consumed["input_tokens"] = int(consumed.get("input_tokens", 0)) + input_tokens
        consumed["output_tokens"] = int(consumed.get("output_tokens", 0)) + output_tokens
        consumed["cost_usd"] = round(float(consumed.get("cost_usd", 0.0)) + cost, 8)
        LLM_TOKENS.labels(model=model, type="input").inc(input_tokens)
        LLM_TOKENS.labels(model=model, type="output").inc(output_tokens)
        LLM_COST_USD.labels(model=model).inc(cost)
        return cost


def cost_spent(budgets: Mapping[str, Any], consumed: Mapping[str, Any]) -> bool:
    limit = float(budgets.get("max_cost_usd") or 0)
    return limit > 0 and float(consumed.get("cost_usd", 0.0)) >= limit


def model_allowlist(settings: Settings) -> set[str]:
    """Model names that may become metric label values: RLM_MODEL_ALLOWLIST
    (comma-separated) when set, else every priced model; plus the default
    root and sub models. Any other name is counted as "other"."""
    configured = {m.strip() for m in settings.model_allowlist.split(",") if m.strip()}
    priced = {*DEFAULT_PRICES, *settings.price_table_json} - {UNKNOWN_MODEL}
    return (configured or priced) | {settings.default_root_model, settings.default_sub_model}
