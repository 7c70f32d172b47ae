"""Search a collection, by a query's vector or by vectors made elsewhere: the one module the
CLI and Serve both call. A collection is searched only with vectors of its own model."""

from __future__ import annotations

import numpy as np

from vectorize.errors import ConfigError, ModelMismatchError, UnknownCollectionError
from vectorize.identity import ModelIdentity
from vectorize.store.collection import Collection
from vectorize.store.registry import Registered, registered
from vectorize.store.search import SEARCH_MODES, Hit, nearest
from vectorize.store.versions import search_lock

MAX_K = 1000


def check_k(k: int) -> None:
    if not 1 <= k <= MAX_K:
        raise ConfigError(f"-k must be from 1 to {MAX_K}")


def check_mode(mode: str) -> None:
    if mode not in SEARCH_MODES:
        raise ConfigError(f"--mode {mode!r}: choose {', '.join(SEARCH_MODES)}")


def parse_filters(pairs: list[str]) -> dict[str, str]:
    """``--filter key=value`` options as the metadata every hit must have."""
    filters = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--filter {pair!r}: give key=value, like --filter author=ann")
        filters[key] = value
    return filters


def collection_model(conn, name: str) -> tuple[Collection, Registered]:
    """The collection named ``name`` and its registry row (its model, its storage)."""
    collection = Collection(name)
    found = registered(conn, collection)
    if found is None:
        raise UnknownCollectionError(f"no collection {name!r} in this database")
    return collection, found


def search(
    conn,
    name: str,
    vector: np.ndarray,
    k: int,
    model: ModelIdentity,
    where: dict | None = None,
    mode: str = "vector",
    words: str = "",
) -> list[Hit]:
    """The ``k`` best rows for ``vector``, a vector of ``model`` (and for ``words``, the query's
    text, in keyword and hybrid modes); ``where``: metadata key: value pairs every hit must have."""
    check_k(k)
    check_mode(mode)
    Collection(name)
    with conn.transaction():  # the collection's model and vectors, as no migration's swap can change them
        search_lock(conn, name)
        collection, found = collection_model(conn, name)
        if not found.identity.same_model(model):
            raise ModelMismatchError(f"collection {name!r} holds vectors of {found.identity.name}, not {model.name}")
        return nearest(conn, collection, found.storage, vector, k, where, mode, words)
