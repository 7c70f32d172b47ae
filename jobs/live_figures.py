"""A run's figures while it goes: every few seconds the driver reads the run's bookkeeping
actor and writes what it holds to the run history (``metrics``, marked live) and to Ray's
metrics (``ray_vectorize_run_rows_written``, ``ray_vectorize_run_rows_so_far{outcome}``,
``ray_vectorize_run_embedded_per_second``); at the end, the run's totals go to Ray's counters
``ray_vectorize_run_rows_total{outcome}``, ``ray_vectorize_run_tokens_total`` and
``ray_vectorize_runs_total{status}``."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from jobs.ray_metrics import ray_metric
from vectorize.store.runs import record_progress
from vectorize.summary import RunSummary

logger = logging.getLogger(__name__)


class LiveFigures:
    INTERVAL_S = 5.0

    def __init__(self, dsn: str, summary: RunSummary, meter: Any, interval_s: float | None = None) -> None:
        self.dsn = dsn
        self.summary = summary
        self.meter = meter
        self.interval_s = interval_s or self.INTERVAL_S
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="live-figures", daemon=True)
        self._started = time.perf_counter()

    def __enter__(self) -> LiveFigures:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.update()
            except Exception:  # figures for watching: a miss must not stop the run
                logger.debug("could not update the live figures", exc_info=True)

    def update(self) -> None:
        import ray

        (rows, _), batches = ray.get([self.meter.read.remote(), self.meter.batch_metrics.remote()], timeout=30)
        written = rows.get("rows written", 0)
        outcomes = {outcome: rows.get(outcome, 0) for outcome in ("embedded", "reused", "unchanged", "failed")}
        elapsed = time.perf_counter() - self._started
        rate = batches.texts_embedded / elapsed if elapsed > 0 else 0.0
        figures = {"rows_written": written, **outcomes, "seconds": round(elapsed, 1), "embedded_per_second": rate}
        record_progress(self.dsn, self.summary.run_id, {**batches.to_dict(), **figures})
        tags = {"collection": self.summary.collection}
        description = "Rows the running job has written so far."
        ray_metric("Gauge", "vectorize_run_rows_written", description, ("collection",)).set(written, tags)
        by_outcome = ray_metric(
            "Gauge", "vectorize_run_rows_so_far", "The running job's rows by outcome.", ("collection", "outcome")
        )
        for outcome, count in outcomes.items():
            by_outcome.set(count, {**tags, "outcome": outcome})
        description = "Texts per second the running job has embedded."
        ray_metric("Gauge", "vectorize_run_embedded_per_second", description, ("collection",)).set(rate, tags)


def export_run_totals(summary: RunSummary, status: str) -> None:
    """The finished run's figures as Ray counters (a no-op without Ray)."""
    import ray

    if not ray.is_initialized():
        return
    try:
        rows = ray_metric(
            "Counter", "vectorize_run_rows", "Rows of finished runs, by outcome.", ("collection", "outcome")
        )
        for outcome, count in (
            ("read", summary.rows_read),
            ("embedded", summary.embedded),
            ("reused", summary.reused),
            ("unchanged", summary.unchanged),
            ("failed", summary.failed),
        ):
            if count:
                rows.inc(count, {"collection": summary.collection, "outcome": outcome})
        if summary.tokens:
            tokens = ray_metric("Counter", "vectorize_run_tokens", "Tokens embedded by finished runs.", ("collection",))
            tokens.inc(summary.tokens, {"collection": summary.collection})
        runs = ray_metric("Counter", "vectorize_runs", "Finished runs, by status.", ("collection", "status"))
        runs.inc(1, {"collection": summary.collection, "status": status})
    except Exception:
        logger.warning("could not export the run's figures to Ray's metrics", exc_info=True)
