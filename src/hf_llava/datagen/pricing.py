"""Token prices and the `--max-cost` budget.

Design notes
- Prices are USD per 1M tokens, `{"model": {"input": x, "output": y}}`; a model name matches its exact entry or
  the longest entry it starts with (`gpt-4o-mini-2024-07-18` -> `gpt-4o-mini`). The built-in table is a
  snapshot of public list prices and WILL go stale: `--price-table FILE.json` overrides/extends it.
- The Batch API bills at `BATCH_DISCOUNT` of the live price.
- The budget never lets the bill pass the cap: before a request is sent it reserves the worst case (estimated
  prompt tokens + `max_tokens` of output); the reservation is replaced by the real cost from the response's
  `usage`. Prompt tokens are estimated at 3 characters per token until a real response shows the actual ratio.
"""

from __future__ import annotations

import json
from pathlib import Path

BATCH_DISCOUNT = 0.5
DEFAULT_PRICES = {  # USD per 1M tokens (public list prices, 2025)
    "gpt-4o": {"input": 2.50, "output": 10.00},
    "gpt-4o-mini": {"input": 0.15, "output": 0.60},
    "gpt-4.1": {"input": 2.00, "output": 8.00},
    "gpt-4.1-mini": {"input": 0.40, "output": 1.60},
    "gpt-4.1-nano": {"input": 0.10, "output": 0.40},
    "gpt-4-turbo": {"input": 10.00, "output": 30.00},
    "gpt-4": {"input": 30.00, "output": 60.00},
    "gpt-3.5-turbo": {"input": 0.50, "output": 1.50},
    "gpt-5": {"input": 1.25, "output": 10.00},
    "gpt-5-mini": {"input": 0.25, "output": 2.00},
    "gpt-5-nano": {"input": 0.05, "output": 0.40},
}


class PriceTable:
    def __init__(self, prices: dict | None = None):
        self.prices = dict(DEFAULT_PRICES if prices is None else prices)

    @classmethod
    def load(cls, override: str | Path | None = None) -> "PriceTable":
        table = cls()
        if override:
            data = json.loads(Path(override).read_text())
            for model, entry in data.items():
                if not isinstance(entry, dict) or set(entry) != {"input", "output"}:
                    raise ValueError(f"{override}: price for {model!r} must be {{'input': x, 'output': y}} (USD/1M tokens)")
                table.prices[model] = {"input": float(entry["input"]), "output": float(entry["output"])}
        return table

    def lookup(self, model: str) -> dict | None:
        if model in self.prices:
            return self.prices[model]
        prefixes = [name for name in self.prices if model.startswith(name)]
        return self.prices[max(prefixes, key=len)] if prefixes else None

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int, batch: bool = False) -> float | None:
        price = self.lookup(model)
        if price is None:
            return None
        usd = (prompt_tokens * price["input"] + completion_tokens * price["output"]) / 1e6
        return usd * BATCH_DISCOUNT if batch else usd


class CostBudget:
    """Running bill plus worst-case reservations for requests in flight."""

    def __init__(self, prices: PriceTable, model: str, max_cost: float | None, max_tokens: int,
                 batch: bool = False, spent: float = 0.0):
        if max_cost is not None and prices.lookup(model) is None:
            raise ValueError(f"--max-cost needs a price for model {model!r}; add it with --price-table FILE.json")
        self.prices, self.model, self.max_cost, self.max_tokens, self.batch = prices, model, max_cost, max_tokens, batch
        self.spent = spent
        self.reserved = 0.0
        self.open = 0  # reservations not yet settled or released
        self.chars_per_token = 3.0

    @property
    def known(self) -> bool:
        return self.prices.lookup(self.model) is not None

    def worst_case(self, prompt_chars: int) -> float:
        return self.prices.cost(self.model, int(prompt_chars / self.chars_per_token) + 1, self.max_tokens, self.batch) or 0.0

    def reserve(self, prompt_chars: int, force: bool = False) -> float | None:
        """Reserve the worst case of one request; None when it could pass the cap.

        `force` reserves regardless (money already committed, e.g. a Batch API job submitted by an earlier run)."""
        amount = self.worst_case(prompt_chars)
        if not force and self.max_cost is not None and self.spent + self.reserved + amount > self.max_cost:
            return None
        self.reserved += amount
        self.open += 1
        return amount

    def release(self, reservation: float) -> None:
        """Drop the reservation of a request that got no response."""
        self.reserved -= reservation
        self.open -= 1

    def settle(self, reservation: float, usage: dict | None, prompt_chars: int = 0) -> float:
        """Replace a reservation with the real cost from a response's usage; returns that cost.

        A response without usage is charged its reservation (the worst case), so the cap still holds."""
        self.reserved -= reservation
        self.open -= 1
        cost = self.cost_of(usage) if usage else reservation
        self.spent += cost
        if usage and usage.get("prompt_tokens") and prompt_chars:
            self.chars_per_token = min(self.chars_per_token, prompt_chars / usage["prompt_tokens"])
        return cost

    def cost_of(self, usage: dict | None) -> float:
        if not usage:
            return 0.0
        return self.prices.cost(self.model, usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0),
                                self.batch) or 0.0
