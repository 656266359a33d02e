"""Token and cost accounting: every provider call's usage -> USD.

Prices are USD per million tokens, per model, from RLM_PRICE_TABLE_JSON
(`{"gpt-4o": {"input_per_1m": 2.5, "output_per_1m": 10.0}, ...}`) over the
defaults below (list prices of common OpenAI models when this was written;
check yours). A model with no entry, and the offline `scripted` provider,
cost 0. `budgets.max_cost_usd` (0 = unlimited) ends an execution with
BUDGET_EXCEEDED once spent and refuses further sub-calls.
"""

from __future__ import annotations

from typing import Any

from rlm_rs.observability import LLM_COST_USD, LLM_TOKENS

DEFAULT_PRICES: dict[str, dict[str, float]] = {
    "gpt-4o": {"input_per_1m": 2.50, "output_per_1m": 10.00},
    "gpt-4o-mini": {"input_per_1m": 0.15, "output_per_1m": 0.60},
    "gpt-4.1": {"input_per_1m": 2.00, "output_per_1m": 8.00},
    "gpt-4.1-mini": {"input_per_1m": 0.40, "output_per_1m": 1.60},
    "gpt-4.1-nano": {"input_per_1m": 0.10, "output_per_1m": 0.40},
}


class PriceTable:
    def __init__(self, overrides: dict[str, Any] | None = None) -> None:
        self.prices = {**DEFAULT_PRICES, **(overrides or {})}

    def cost_usd(self, model: str, input_tokens: int, output_tokens: int) -> float:
        price = self.prices.get(model)
        if price is None:  # "gpt-4o-2024-08-06" is priced as "gpt-4o"
            base = max((m for m in self.prices if model.startswith(m)), key=len, default=None)
            price = self.prices.get(base) if base else None
        if not price:
            return 0.0
        return (
            input_tokens * float(price.get("input_per_1m", 0))
            + output_tokens * float(price.get("output_per_1m", 0))
        ) / 1_000_000

    def record(self, consumed: dict[str, Any], model: str, input_tokens: int, output_tokens: int) -> float:
        """Add one call's usage and cost to `consumed`; returns the call's cost."""
        cost = self.cost_usd(model, input_tokens, output_tokens)
        consumed["input_tokens"] = int(consumed.get("input_tokens", 0)) + input_tokens
        consumed["output_tokens"] = int(consumed.get("output_tokens", 0)) + output_tokens
        consumed["cost_usd"] = round(float(consumed.get("cost_usd", 0.0)) + cost, 8)
        LLM_TOKENS.labels(model=model, type="input").inc(input_tokens)
        LLM_TOKENS.labels(model=model, type="output").inc(output_tokens)
        LLM_COST_USD.labels(model=model).inc(cost)
        return cost


def cost_spent(budgets: dict[str, Any], consumed: dict[str, Any]) -> bool:
    limit = float(budgets.get("max_cost_usd") or 0)
    return limit > 0 and float(consumed.get("cost_usd", 0.0)) >= limit
