"""Nearest stored texts to a query vector, by cosine similarity, through the HNSW index."""

from __future__ import annotations

import json
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

    def to_dict(self, digits: int | None = None) -> dict:
        similarity = self.similarity if digits is None else round(self.similarity, digits)
        return {
            "id": self.id,
            "chunk": self.chunk,
            "similarity": similarity,
            "text": self.text,
            "metadata": self.metadata,
        }


def nearest(conn, collection: Collection, vector: np.ndarray, k: int, where: dict | None = None) -> list[Hit]:
    """The ``k`` nearest rows; ``where``: metadata key: value pairs every hit must have."""
    query = np.asarray(vector, dtype=np.float32)
    condition = sql.SQL("WHERE metadata @> %(where)s::jsonb") if where else sql.SQL("")
    found = conn.execute(
        sql.SQL(
            """SELECT id, chunk, 1 - (embedding <=> %(q)s) AS similarity, text, metadata
               FROM {t} {condition} ORDER BY embedding <=> %(q)s LIMIT %(k)s"""
        ).format(t=collection.table, condition=condition),
        {"q": query, "k": k, "where": json.dumps(where or {})},
    ).fetchall()
    return [Hit(i, c, float(s), t, m) for i, c, s, t, m in found]
