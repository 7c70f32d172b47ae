"""The collections a replica searches: one connection to the database, used by one request at
a time, and the database's failures as answers in OpenAI's error shape."""

from __future__ import annotations

import logging
import threading
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

logger = logging.getLogger(__name__)


class Collections:
    def __init__(self, dsn: str | None, identity: ModelIdentity) -> None:
        self.dsn = dsn
        self.identity = identity  # the model served: a collection of another is not searched
        self._db: psycopg.Connection | None = None
        self._vector_types = False  # pgvector's types registered on self._db
        self._lock = threading.Lock()

    def search(self, parsed: SearchRequest, vector) -> list[dict]:
        from vectorize.search import search

        self._check_name(parsed.collection)
        try:
            with self._database() as conn:
                hits = search(
                    conn, parsed.collection, vector, parsed.k, self.identity, parsed.filter, parsed.mode, parsed.query
                )
        except UnknownCollectionError:
            message = f"no collection named {parsed.collection!r}"
            raise ApiError(404, message, param="collection", code="not_found") from None
        except ModelMismatchError as exc:
            raise ApiError(400, str(exc), param="collection") from None
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
