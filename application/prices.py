"""What model calls cost: a price table per model, in USD per million tokens."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelPrice:
    """List prices of one model."""

    input_per_million: float
    output_per_million: float


class PriceTable:
    """Costs of model calls; a model without a price costs `None` (unknown), never 0."""

    def __init__(self, prices: Mapping[str, ModelPrice] | None = None):
        self._prices = dict(prices or {})

    def cost(
        self, models: Iterable[str | None], prompt_tokens: int | None, completion_tokens: int | None
    ) -> float | None:
        """The cost of one call, priced as the first of `models` with a price (the model asked
        for, then the one that answered); None when no price or no usage is known."""
        if prompt_tokens is None or completion_tokens is None:
            return None
        price = next((self._prices[m] for m in models if m in self._prices), None)
        if price is None:
            return None
        usd = (
            prompt_tokens * price.input_per_million + completion_tokens * price.output_per_million
        ) / 1_000_000
        return round(usd, 8)
