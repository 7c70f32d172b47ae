"""Each sampled row's nearest neighbour of another text, found by Ray tasks that query
pgvector side by side: the near-duplicate rate and the distribution of nearest-neighbour
similarities of a collection, without holding its vectors anywhere but in Postgres."""

from __future__ import annotations

import logging
import math

import numpy as np
from psycopg import sql

from vectorize.db import connect
from vectorize.store.collection import Collection

logger = logging.getLogger(__name__)

HITS_PER_QUERY = 8  # enough to step over the row itself and its identical texts


def sample_rows(conn, collection: Collection, rows: int, size: int) -> list[tuple[str, int, str]]:
    """Up to ``size`` rows with a usable vector, picked at random over the whole table (about
    1.5 x ``size`` pass a coin toss in one scan, and a shuffle of those keeps ``size``); every
    row when the collection has no more than ``size``."""
    fraction = 1.0 if size >= rows else min(1.0, 1.5 * size / max(rows, 1))
    return conn.execute(
        sql.SQL(
            """SELECT id, chunk, text_sha256 FROM {t}
               WHERE vector_norm(embedding) > 0 AND vector_norm(embedding) < 'Infinity'::float8
                 AND random() < %s
               ORDER BY random() LIMIT %s"""
        ).format(t=collection.table),
        (fraction, size),
    ).fetchall()


def nearest_other_texts(dsn: str, table: str, keys: list[tuple[str, int, str]]) -> list[float]:
    """For each (id, chunk, text hash): the cosine similarity of the nearest stored row whose
    text differs; rows whose neighbours all share their text are left out."""
    collection = Collection(table)
    found: list[float] = []
    with connect(dsn) as conn:
        for key, chunk, digest in keys:
            own = conn.execute(
                sql.SQL("SELECT embedding FROM {t} WHERE id = %s AND chunk = %s").format(t=collection.table),
                (key, chunk),
            ).fetchone()
            if own is None:  # deleted since it was sampled
                continue
            # the vector as a parameter, not a join: only then can the HNSW index order the rows
            hits = conn.execute(
                sql.SQL(
                    """SELECT text_sha256, 1 - (embedding <=> %(q)s) FROM {t}
                       ORDER BY embedding <=> %(q)s LIMIT %(k)s"""
                ).format(t=collection.table),
                {"q": own[0], "k": HITS_PER_QUERY},
            ).fetchall()
            for other, similarity in hits:
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
