"""``vectorize check``: a collection's vectors checked against limits, in SQL (every row, in
the database) and in Ray (each sampled row's nearest neighbour, by tasks side by side)."""

from __future__ import annotations

import logging

from vectorize.db import connect
from vectorize.errors import ConfigError, MigrationError
from vectorize.quality.check_report import CheckReport
from vectorize.quality.verdict import Limits, neighbour_figures, verdicts
from vectorize.store.collection import Collection
from vectorize.store.figures import measure
from vectorize.store.registry import Registered, registered_model, registered_model_on
from vectorize.store.run_lock import mark_dead_runs
from vectorize.store.versions import snapshot_of_one_version

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
    their nearest neighbour looked up by Ray tasks. The model, the figures and the sample come
    from one snapshot that no migration's swap splits; a swap before the neighbours are back
    (they read the collection by its name) refuses the check in one line."""
    from jobs.neighbours import neighbour_similarities
    from vectorize.store.lookups import sample_rows

    limits = limits or Limits()
    collection = Collection(table)
    with connect(dsn) as conn:
        registered_model_on(conn, collection)  # a missing collection is one line before anything is written
        mark_dead_runs(conn, collection.name)
        with snapshot_of_one_version(conn, collection.name):
            found = registered_model_on(conn, collection)
            extra = {} if norm_tolerance is None else {"norm_tolerance": norm_tolerance}
            figures = measure(conn, collection, found.identity, **extra)
            keys = sample_rows(conn, collection, figures.rows, sample) if sample > 0 and figures.rows else []
    if figures.rows == 0:
        raise ConfigError(f"collection {collection.name!r} holds no vectors yet: nothing to check")
    neighbours = None
    if sample > 0:
        from vectorize.ray_runtime import ensure_ray

        ensure_ray(address)
        try:
            similarities = neighbour_similarities(dsn, collection, keys)
        except Exception:
            _refuse_if_swapped(dsn, collection, found)  # a version swapped under the lookups, said as such
            raise
        _refuse_if_swapped(dsn, collection, found)
        neighbours = neighbour_figures(similarities, limits.near_duplicate_similarity)
    return CheckReport(collection.name, found.identity.key, figures, neighbours, verdicts(figures, neighbours, limits))


def _refuse_if_swapped(dsn: str, collection: Collection, checked: Registered) -> None:
    now = registered_model(dsn, collection)
    if (now.identity.key, now.storage) != (checked.identity.key, checked.storage):
        raise MigrationError(
            f"collection {collection.name!r} was swapped to another version ({now.identity.name}) while it was "
            f"checked (its sample from {checked.identity.name}): run `vectorize check` again"
        )
