"""Prices per token, from the cost map litellm bundles — without importing litellm.

Importing litellm costs about 1.5 s and 160 MiB per process; the hot path for
OpenAI-compatible providers never needs it. Its bundled
`model_prices_and_context_window_backup.json` is read once, straight from the
installed package, and only the configured models are kept. Nothing is ever
fetched from the network.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import orjson

from core.llm.providers import PROVIDERS

COST_MAP_FILE = "model_prices_and_context_window_backup.json"


@dataclass(frozen=True, slots=True)
class Price:
    input_per_token: float
    output_per_token: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return prompt_tokens * self.input_per_token + completion_tokens * self.output_per_token


def cost_map_path() -> Path | None:
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / COST_MAP_FILE
    return path if path.exists() else None


class CostTable:
    """USD prices for the (provider kind, model) pairs the router serves."""

    def __init__(self, prices: dict[tuple[str, str], Price]) -> None:
        self.prices = prices

    @classmethod
    def load(cls, models: Iterable[tuple[str, str]], path: Path | None = None) -> CostTable:
        wanted = set(models)
        path = path or cost_map_path()
        if path is None or not wanted:
            return cls({})
        raw = orjson.loads(path.read_bytes())
        prices = {}
        for kind, model in wanted:
            spec = PROVIDERS.get(kind)
            prefix = spec.litellm_prefix if spec else ""
            for key in (f"{prefix}/{model}" if prefix else model, model):
                entry = raw.get(key)
                if isinstance(entry, dict) and "input_cost_per_token" in entry:
                    prices[(kind, model)] = Price(
                        float(entry.get("input_cost_per_token") or 0.0),
                        float(entry.get("output_cost_per_token") or 0.0),
                    )
                    break
        return cls(prices)

    def cost(self, kind: str, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        price = self.prices.get((kind, model))
        return price.cost(prompt_tokens, completion_tokens) if price else 0.0

    def known(self, kind: str, model: str) -> bool:
        return (kind, model) in self.prices
