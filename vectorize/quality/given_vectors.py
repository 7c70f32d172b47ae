"""Vectors made elsewhere, given to ``nearest``: read from .npy or .json, and checked against
the collection before any query (the dimension, finite values, at least one)."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vectorize.db import register_vector_types
from vectorize.errors import ConfigError
from vectorize.search import check_k, collection_model
from vectorize.store.lookups import is_empty
from vectorize.store.search import Hit, nearest
from vectorize.store.versions import search_lock

logger = logging.getLogger(__name__)


def load_vectors(path: Path) -> np.ndarray:
    """A .npy array (one vector or one a row), or JSON: a list of numbers, a list of lists, or
    an OpenAI embeddings answer (``{"data": [{"embedding": [...]}, ...]}``)."""
    if not path.is_file():
        raise ConfigError(f"--vectors {path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            values = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise ConfigError(f"--vectors {path}: not a numeric .npy array ({exc})") from None
    elif suffix == ".json":
        try:
            values = json.loads(path.read_text())
        except ValueError as exc:
            raise ConfigError(f"--vectors {path}: not valid JSON ({exc})") from None
        if isinstance(values, dict) and isinstance(values.get("data"), list):
            values = [item.get("embedding") if isinstance(item, dict) else item for item in values["data"]]
    else:
        raise ConfigError(f"--vectors {path}: give a .npy or .json file")
    return as_matrix(values, f"--vectors {path}")


def as_matrix(values: object, what: str) -> np.ndarray:
    """``values`` as a float32 matrix, one vector a row; ConfigError naming what is wrong."""
    try:
        matrix = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"{what}: give numbers, as one vector or a list of vectors of one length") from None
    if matrix.ndim == 1:
        matrix = matrix.reshape(1, -1)
    if matrix.ndim != 2 or matrix.size == 0:
        raise ConfigError(f"{what}: give at least one vector, as one vector or a list of vectors of one length")
    return matrix


def check_vectors(matrix: np.ndarray, dimensions: int, collection: str, what: str) -> np.ndarray:
    if matrix.shape[1] != dimensions:
        raise ConfigError(
            f"{what}: vectors of {matrix.shape[1]} dimensions; collection {collection!r} holds {dimensions}"
        )
    bad = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
    if bad.size:
        raise ConfigError(f"{what}: vector {int(bad[0])} holds NaN or infinity ({bad.size} such vectors in all)")
    zero = np.flatnonzero(~matrix.any(axis=1))
    if zero.size:
        raise ConfigError(f"{what}: vector {int(zero[0])} is all zeros, which has no direction to compare")
    return matrix.astype(np.float32)


@dataclass
class NearestTexts:
    hits: list[list[Hit]]

    def summary(self) -> dict:
        """Over the nearest hit of each given vector."""
        best = [h[0].similarity for h in self.hits if h]
        if not best:
            return {"count": len(self.hits), "mean": None, "min": None, "max": None}
        return {
            "count": len(self.hits),
            "mean": round(math.fsum(best) / len(best), 6),
            "min": round(min(best), 6),
            "max": round(max(best), 6),
        }


def nearest_for_vectors(conn, table: str, values: object, k: int, what: str) -> NearestTexts:
    """The library call behind ``vectorize nearest`` and ``POST /v1/nearest``: ``values`` checked
    against collection ``table`` (which must exist and hold vectors), then queried. ``conn``
    need not have pgvector's types yet: a database without any collection has no extension."""
    check_k(k)
    register_vector_types(conn)
    with conn.transaction():  # one version of the collection throughout (``vectorize.store.versions``)
        search_lock(conn, table)
        collection, found = collection_model(conn, table)
        vectors = check_vectors(as_matrix(values, what), found.identity.dimensions, table, what)
        if is_empty(conn, collection):
            raise ConfigError(f"collection {table!r} holds no vectors yet: nothing to compare with")
        return NearestTexts([nearest(conn, collection, found.storage, vector, k) for vector in vectors])
