"""Nearest stored texts to a query vector, by cosine similarity, through the HNSW index."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from psycopg import sql

from vectorize.store.collection import Collection


@dataclass
class Hit:
    id: str
    chunk: int
    similarity: float
    text: str
    metadata: dict


def nearest(conn, collection: Collection, vector: np.ndarray, k: int) -> list[Hit]:
    query = np.asarray(vector, dtype=np.float32)
    found = conn.execute(
        sql.SQL(
            """SELECT id, chunk, 1 - (embedding <=> %(q)s) AS similarity, text, metadata
               FROM {t} ORDER BY embedding <=> %(q)s LIMIT %(k)s"""
        ).format(t=collection.table),
        {"q": query, "k": k},
    ).fetchall()
    return [Hit(i, c, float(s), t, m) for i, c, s, t, m in found]
