"""Each sampled row's nearest neighbour of another text, found by Ray tasks that query
pgvector side by side: the near-duplicate rate and the distribution of nearest-neighbour
similarities of a collection, without holding its vectors anywhere but in Postgres."""

from __future__ import annotations

import logging
import math

import numpy as np

from vectorize.db import connect
from vectorize.store.collection import Collection
from vectorize.store.lookups import nearest_to_stored
from vectorize.store.registry import registered

logger = logging.getLogger(__name__)

HITS_PER_QUERY = 8  # enough to step over the row itself and its identical texts


def nearest_other_texts(dsn: str, table: str, keys: list[tuple[str, int, str]]) -> list[float]:
    """For each (id, chunk, text hash): the cosine similarity of the nearest stored row whose
    text differs; rows whose neighbours all share their text are left out."""
    collection = Collection(table)
    found: list[float] = []
    with connect(dsn) as conn:
        storage = registered(conn, collection).storage
        for key, chunk, digest in keys:
            hits = nearest_to_stored(conn, collection, storage, key, chunk, HITS_PER_QUERY)
            for other, similarity in hits or []:  # None: deleted since it was sampled
                if other != digest and similarity is not None and not math.isnan(similarity):
                    found.append(float(similarity))
                    break
    return found


def neighbour_similarities(dsn: str, collection: Collection, keys: list[tuple[str, int, str]]) -> np.ndarray:
    """The nearest-other-text similarities of ``keys``, split over Ray tasks (one per CPU of
    the cluster, at most one per 50 rows)."""
    import ray

    if not keys:
        return np.zeros(0, dtype=np.float64)
    parts = max(1, min(int(ray.cluster_resources().get("CPU", 1)), math.ceil(len(keys) / 50)))
    task = ray.remote(num_cpus=0.25, max_retries=2)(nearest_other_texts)
    step = math.ceil(len(keys) / parts)
    futures = [task.remote(dsn, collection.name, keys[i : i + step]) for i in range(0, len(keys), step)]
    return np.asarray([s for part in ray.get(futures) for s in part], dtype=np.float64)
