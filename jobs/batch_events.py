"""One event per embedded batch: ``embedding.batch_generated``, logged as one JSON line by the
actor that made it, told to the run's bookkeeping actor (for the run's figures and its
timeline) and counted in Ray's metrics (so a Ray dashboard or Prometheus shows the run live).

Ray exports the metrics of every process at the node's metrics port, prefixed ``ray_``:
``ray_vectorize_batches_total``, ``ray_vectorize_batch_texts_total``,
``ray_vectorize_texts_embedded_total``, ``ray_vectorize_tokens_total`` and the histogram
``ray_vectorize_batch_seconds``, each tagged with the collection.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from jobs.ray_metrics import ray_metric

EVENT = "embedding.batch_generated"
events = logging.getLogger("vectorize.events")
logger = logging.getLogger(__name__)

BATCH_SECONDS_BOUNDARIES = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120]


@dataclass(frozen=True)
class RunContext:
    """What an embedding actor needs to tell of its batches: the run, and its bookkeeping actor."""

    run_id: str
    collection: str
    meter: Any = None
    open_early: bool = False  # the run surely has texts to embed: actors open their provider as they start


@dataclass(frozen=True)
class BatchFigures:
    rows: int  # rows of the batch, embedded or not
    embedded: int  # texts the model embedded
    tokens: int
    seconds: float  # in the model (or the API), for this batch
    ended: float  # wall clock, seconds since the epoch
    actor: str

    @property
    def embedded_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0


class BatchEvents:
    """Held by an embedding actor; ``record`` after each batch."""

    def __init__(self, context: RunContext | None) -> None:
        self.context = context
        self.actor = f"{os.uname().nodename}:{os.getpid()}"
        if context is not None and not events.handlers:
            handler = logging.StreamHandler(sys.stderr)  # Ray keeps a worker's stderr in its log files
            handler.setFormatter(logging.Formatter("%(message)s"))
            events.addHandler(handler)
            events.setLevel(logging.INFO)
            events.propagate = False

    def record(self, rows: int, embedded: int, tokens: int, seconds: float) -> BatchFigures:
        figures = BatchFigures(rows, embedded, tokens, seconds, time.time(), self.actor)
        context = self.context
        if context is None:
            return figures
        events.info(
            json.dumps(
                {
                    "event": EVENT,
                    "run_id": context.run_id,
                    "collection": context.collection,
                    **asdict(figures),
                    "seconds": round(seconds, 6),
                    "embedded_per_second": round(figures.embedded_per_second, 2),
                }
            )
        )
        if context.meter is not None:
            context.meter.add_batch.remote(figures)
        try:
            self._count(context.collection, figures)
        except Exception:  # metrics are for watching; a failure of theirs must not fail the batch
            logger.warning("could not record the batch's metrics", exc_info=True)
        return figures

    def _count(self, collection: str, figures: BatchFigures) -> None:
        tags = {"collection": collection}
        keys = ("collection",)
        ray_metric("Counter", "vectorize_batches", "Batches an embedding actor finished.", keys).inc(1, tags)
        if figures.rows:
            ray_metric("Counter", "vectorize_batch_texts", "Rows in the batches, embedded or not.", keys).inc(
                figures.rows, tags
            )
        if figures.embedded:
            ray_metric("Counter", "vectorize_texts_embedded", "Texts the model embedded.", keys).inc(
                figures.embedded, tags
            )
            ray_metric(
                "Histogram", "vectorize_batch_seconds", "Seconds a batch spent in the model.", keys,
                boundaries=BATCH_SECONDS_BOUNDARIES,
            ).observe(figures.seconds, tags)  # fmt: skip
        if figures.tokens:
            ray_metric("Counter", "vectorize_tokens", "Tokens of the texts embedded.", keys).inc(figures.tokens, tags)
