"""The collections a replica searches: one connection to the database, used by one request at
a time, and the database's failures as answers in OpenAI's error shape."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from serve.api_errors import ApiError
from serve.schema import NearestRequest, SearchRequest
from vectorize.db import connect, connection_lost, redact_dsn, register_vector_types
from vectorize.errors import (
    ConfigError,
    DatabaseConfigError,
    ModelMismatchError,
    UnknownCollectionError,
    VectorizeError,
)
from vectorize.identity import ModelIdentity
from vectorize.store.collection import Collection
from vectorize.store.registry import registered

logger = logging.getLogger(__name__)


MODEL_CACHE_S = 2.0  # how long a collection's model, read from the registry, is taken as known


class ModelChanged(Exception):
    """The collection's model is not the one its query was embedded with: a migration swapped it."""


class Collections:
    def __init__(self, dsn: str | None) -> None:
        self.dsn = dsn
        self._db: psycopg.Connection | None = None
        self._vector_types = False  # pgvector's types registered on self._db
        self._lock = threading.Lock()
        self._models: dict[str, tuple[float, ModelIdentity]] = {}  # collection -> (when read, its model)

    def model_of(self, name: str) -> ModelIdentity:
        """The model of collection ``name`` as the registry had it at most MODEL_CACHE_S ago."""
        self._check_name(name)
        known = self._models.get(name)
        if known is not None and time.monotonic() - known[0] < MODEL_CACHE_S:
            return known[1]
        try:
            with self._database() as conn:
                found = registered(conn, Collection(name))
        except UnknownCollectionError:
            found = None
        if found is None:
            raise ApiError(404, f"no collection named {name!r}", param="collection", code="not_found")
        self._models[name] = (time.monotonic(), found.identity)
        return found.identity

    def forget_model(self, name: str) -> None:
        self._models.pop(name, None)

    def search(self, parsed: SearchRequest, vector, identity: ModelIdentity) -> list[dict]:
        """The hits for ``vector``, a query embedded with ``identity``; ModelChanged where the
        collection holds another model's vectors now."""
        from vectorize.search import search

        self._check_name(parsed.collection)
        try:
            with self._database() as conn:
                hits = search(
                    conn, parsed.collection, vector, parsed.k, identity, parsed.filter, parsed.mode, parsed.query
                )
        except UnknownCollectionError:
            message = f"no collection named {parsed.collection!r}"
            raise ApiError(404, message, param="collection", code="not_found") from None
        except ModelMismatchError:
            self.forget_model(parsed.collection)
            raise ModelChanged(parsed.collection) from None
        except ConfigError as exc:  # a collection made before keyword search, asked for it
            raise ApiError(400, str(exc), param="mode") from None
        return [h.to_dict() for h in hits]

    def nearest_to_vectors(self, parsed: NearestRequest):
        from vectorize.quality.given_vectors import nearest_for_vectors

        self._check_name(parsed.collection)
        what = "'vectors'"
        try:
            with self._database() as conn:
                return nearest_for_vectors(conn, parsed.collection, parsed.vectors, parsed.k, what)
        except UnknownCollectionError as exc:
            raise ApiError(404, str(exc), param="collection", code="not_found") from None
        except ConfigError as exc:
            raise ApiError(400, str(exc), param="vectors" if str(exc).startswith(what) else "collection") from None

    def reachable(self) -> bool | None:
        """Whether the database answers; None where this server has none."""
        if self.dsn is None:
            return None
        try:
            with self._database() as conn:
                conn.execute("SELECT 1")
            return True
        except ApiError:
            return False

    @staticmethod
    def _check_name(name: str) -> None:
        try:
            Collection(name)
        except VectorizeError as exc:
            raise ApiError(400, str(exc), param="collection") from None

    @contextmanager
    def _database(self) -> Iterator[psycopg.Connection]:
        """The connection, one user at a time; a database that is down or lost the connection
        is a 503 saying so, and the next request connects again."""
        with self._lock:
            try:
                yield self._connection()
            except (DatabaseConfigError, psycopg.OperationalError) as exc:
                if isinstance(exc, psycopg.OperationalError) and not connection_lost(exc):
                    raise
                if self._db is not None:
                    self._db.close()
                self._db = None
                logger.warning("the database at %s does not answer", redact_dsn(self.dsn or ""), exc_info=exc)
                message = "the database does not answer; retry later"
                raise ApiError(503, message, "server_error", retry_after_s=5) from None

    def _connection(self) -> psycopg.Connection:
        if self.dsn is None:
            raise ApiError(503, "this server has no database (start it with --dsn)", "server_error")
        if self._db is None or self._db.closed or self._db.broken:
            self._db = connect(self.dsn, vector=False)
            self._db.autocommit = True
            self._vector_types = False
        if not self._vector_types:  # until a job has created the extension, the database is empty
            self._vector_types = register_vector_types(self._db)
        return self._db
