"""Counters of one replica, rendered in Prometheus' text format."""

from __future__ import annotations

from collections import Counter


class ServiceMetrics:
    def __init__(self) -> None:
        self.requests: Counter = Counter()  # (route, status) -> count
        self.model_calls = 0
        self.texts_embedded = 0
        self.model_seconds = 0.0

    def render(self, cache_hits: int, cache_misses: int, cache_size: int) -> str:
        lines = [
            "# HELP vectorize_requests_total Requests answered, by route and status.",
            "# TYPE vectorize_requests_total counter",
        ]
        for (route, status), count in sorted(self.requests.items()):
            lines.append(f'vectorize_requests_total{{route="{route}",status="{status}"}} {count}')
        for name, kind, value, what in (
            ("vectorize_model_calls_total", "counter", self.model_calls, "Calls of the model (one per batch)."),
            ("vectorize_texts_embedded_total", "counter", self.texts_embedded, "Texts the model embedded."),
            ("vectorize_model_seconds_total", "counter", round(self.model_seconds, 6), "Time in model calls."),
            ("vectorize_cache_hits_total", "counter", cache_hits, "Texts answered from the cache."),
            ("vectorize_cache_misses_total", "counter", cache_misses, "Texts not in the cache."),
            ("vectorize_cache_entries", "gauge", cache_size, "Vectors held in the cache."),
        ):
            lines += [f"# HELP {name} {what}", f"# TYPE {name} {kind}", f"{name} {value}"]
        return "\n".join(lines) + "\n"
