"""Search a collection, by a query's vector or by vectors made elsewhere: the one module the
CLI and Serve both call. A collection is searched only with vectors of its own model."""

from __future__ import annotations

import numpy as np

from vectorize.errors import ConfigError, ModelMismatchError, UnknownCollectionError
from vectorize.identity import ModelIdentity
from vectorize.store.collection import Collection
from vectorize.store.registry import registered_identity
from vectorize.store.search import Hit, nearest

MAX_K = 1000


def check_k(k: int) -> None:
    if not 1 <= k <= MAX_K:
        raise ConfigError(f"-k must be from 1 to {MAX_K}")


def collection_model(conn, name: str) -> tuple[Collection, ModelIdentity]:
    """The collection named ``name`` and the identity of the model its vectors are from."""
    collection = Collection(name)
    identity = registered_identity(conn, collection)
    if identity is None:
        raise UnknownCollectionError(f"no collection {name!r} in this database")
    return collection, identity


def search(conn, name: str, vector: np.ndarray, k: int, model: ModelIdentity, where: dict | None = None) -> list[Hit]:
    """The ``k`` rows nearest to ``vector``, a vector of ``model``; ``where``: metadata key:
    value pairs every hit must have."""
    check_k(k)
    collection, identity = collection_model(conn, name)
    if not identity.same_model(model):
        raise ModelMismatchError(f"collection {name!r} holds vectors of {identity.name}, not {model.name}")
    return nearest(conn, collection, vector, k, where)
