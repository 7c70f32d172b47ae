"""``vectorize check``: a collection's vectors checked against limits, in SQL (every row, in
the database) and in Ray (each sampled row's nearest neighbour, by tasks side by side)."""

from __future__ import annotations

import logging

from vectorize.db import connect
from vectorize.errors import ConfigError
from vectorize.quality.check_report import CheckReport
from vectorize.quality.verdict import Limits, neighbour_figures, verdicts
from vectorize.store.collection import Collection
from vectorize.store.figures import measure
from vectorize.store.registry import registered_model
from vectorize.store.run_lock import mark_dead_runs

logger = logging.getLogger(__name__)

DEFAULT_SAMPLE = 1000


def check_collection(
    dsn: str,
    table: str,
    limits: Limits | None = None,
    *,
    sample: int = DEFAULT_SAMPLE,
    address: str | None = None,
    norm_tolerance: float | None = None,
) -> CheckReport:
    """Measure collection ``table`` and hold it to ``limits``; ``sample`` rows (0: none) get
    their nearest neighbour looked up by Ray tasks."""
    from jobs.neighbours import neighbour_similarities
    from vectorize.store.lookups import sample_rows

    limits = limits or Limits()
    collection = Collection(table)
    identity = registered_model(dsn, collection).identity
    with connect(dsn) as conn:
        mark_dead_runs(conn, collection.name)
        extra = {} if norm_tolerance is None else {"norm_tolerance": norm_tolerance}
        figures = measure(conn, collection, identity, **extra)
        if figures.rows == 0:
            raise ConfigError(f"collection {collection.name!r} holds no vectors yet: nothing to check")
        keys = sample_rows(conn, collection, figures.rows, sample) if sample > 0 else []
    neighbours = None
    if sample > 0:
        from vectorize.ray_runtime import ensure_ray

        ensure_ray(address)
        similarities = neighbour_similarities(dsn, collection, keys)
        neighbours = neighbour_figures(similarities, limits.near_duplicate_similarity)
    return CheckReport(collection.name, identity.key, figures, neighbours, verdicts(figures, neighbours, limits))
