"""The run's batches, as its bookkeeping actor keeps them: the figures a run reports (batch
latency, actor utilisation, throughput over time) are made from these."""

from __future__ import annotations

import math
import time

from jobs.batch_events import BatchFigures
from vectorize.summary import BatchMetrics

TIMELINE_POINTS = 120  # at most this many points of throughput over the run


class BatchLedger:
    def __init__(self) -> None:
        self._batches: list[BatchFigures] = []
        self._opened = time.time()

    def add_batch(self, figures: BatchFigures) -> None:
        self._batches.append(figures)

    def batch_metrics(self) -> BatchMetrics:
        return summarise(self._batches, self._opened, time.time())


def summarise(batches: list[BatchFigures], opened: float, now: float) -> BatchMetrics:
    """Latency over the batches that embedded something; utilisation: the share of the time
    from the first batch's start to the last one's end that the actors spent in the model."""
    working = [b for b in batches if b.embedded]
    seconds = sorted(b.seconds for b in working)
    spans = actor_spans(working)
    lived = sum(end - start for start, end in spans.values())
    utilisation = (min(1.0, sum(seconds) / lived) if lived > 0 else 1.0) if working else 0.0
    return BatchMetrics(
        batches=len(batches),
        embedding_batches=len(working),
        texts_embedded=sum(b.embedded for b in working),
        tokens=sum(b.tokens for b in working),
        actors=most_at_once(spans),
        actors_started=len({b.actor for b in batches}),
        batch_seconds_mean=sum(seconds) / len(seconds) if seconds else 0.0,
        batch_seconds_p95=seconds[min(len(seconds) - 1, math.ceil(0.95 * len(seconds)) - 1)] if seconds else 0.0,
        actor_utilisation=utilisation,
        timeline=timeline(working, opened, now),
        model_started_at=min((b.ended - b.seconds for b in working), default=None),
        model_ended_at=max((b.ended for b in working), default=None),
    )


def actor_spans(batches: list[BatchFigures]) -> dict[str, tuple[float, float]]:
    """Each actor's time from its first batch's start to its last batch's end: an actor that
    died and was replaced counts only for the time it worked."""
    spans: dict[str, tuple[float, float]] = {}
    for b in batches:
        start, end = spans.get(b.actor, (math.inf, -math.inf))
        spans[b.actor] = (min(start, b.ended - b.seconds), max(end, b.ended))
    return spans


def most_at_once(spans: dict[str, tuple[float, float]]) -> int:
    """The most actors whose spans overlap at one moment."""
    edges = sorted([(start, 1) for start, _ in spans.values()] + [(end, -1) for _, end in spans.values()])
    most = current = 0
    for _, step in edges:
        current += step
        most = max(most, current)
    return most


def timeline(batches: list[BatchFigures], opened: float, now: float) -> list[tuple[float, float]]:
    """(seconds since the run opened, texts embedded per second) in equal steps over the run;
    a batch's texts are spread over the time it spent in the model."""
    span = max(now - opened, 1e-6)
    points = max(1, min(TIMELINE_POINTS, math.ceil(span)))
    step = span / points
    texts = [0.0] * points
    for b in batches:
        start = max(0.0, b.ended - b.seconds - opened)
        end = min(span, max(start, b.ended - opened))
        if end - start < 1e-9:
            texts[min(points - 1, int(start / step))] += b.embedded
            continue
        for i in range(int(start / step), min(points - 1, int(end / step)) + 1):
            overlap = min(end, (i + 1) * step) - max(start, i * step)
            texts[i] += b.embedded * max(0.0, overlap) / (end - start)
    return [(round((i + 1) * step, 3), round(n / step, 3)) for i, n in enumerate(texts)]
