"""Counters of one replica, rendered in Prometheus' text format: its requests, and each model's
calls and cache (a model served in the replica itself, or asked of its deployment)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelFigures:
    model: str
    calls: int = 0  # one per batch
    texts: int = 0
    seconds: float = 0.0
    cache_hits: int = 0
    cache_misses: int = 0
    cache_entries: int = 0


MODEL_SERIES = (  # (name, kind, field, help)
    ("vectorize_model_calls_total", "counter", "calls", "Calls of the model (one per batch)."),
    ("vectorize_texts_embedded_total", "counter", "texts", "Texts the model embedded."),
    ("vectorize_model_seconds_total", "counter", "seconds", "Time in model calls."),
    ("vectorize_cache_hits_total", "counter", "cache_hits", "Texts answered from the cache."),
    ("vectorize_cache_misses_total", "counter", "cache_misses", "Texts not in the cache."),
    ("vectorize_cache_entries", "gauge", "cache_entries", "Vectors held in the cache."),
)


class ServiceMetrics:
    def __init__(self) -> None:
        self.requests: Counter = Counter()  # (route, status) -> count

    def render(self, models: list[ModelFigures]) -> str:
        lines = [
            "# HELP vectorize_requests_total Requests answered, by route and status.",
            "# TYPE vectorize_requests_total counter",
        ]
        for (route, status), count in sorted(self.requests.items()):
            lines.append(f'vectorize_requests_total{{route="{route}",status="{status}"}} {count}')
        for name, kind, field, what in MODEL_SERIES:
            lines += [f"# HELP {name} {what}", f"# TYPE {name} {kind}"]
            for figures in models:
                value = getattr(figures, field)
                lines.append(f'{name}{{model="{figures.model}"}} {round(value, 6) if kind == "counter" else value}')
        return "\n".join(lines) + "\n"
