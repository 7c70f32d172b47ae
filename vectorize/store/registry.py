"""The collection registry: one model identity per collection, checked before any work."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

from vectorize.db import connect, ensure_vector_extension
from vectorize.errors import ConfigError, ModelMismatchError, UnknownCollectionError
from vectorize.identity import ModelIdentity
from vectorize.store.collection import REGISTRY_TABLE, Collection, shared_migrations
from vectorize.store.schema import collection_scope, forget, migrate, migrate_shared

logger = logging.getLogger(__name__)


def _registered(conn, name: str) -> tuple[ModelIdentity, str] | None:
    row = conn.execute(
        sql.SQL("SELECT identity, model_source FROM {r} WHERE collection = %s").format(
            r=sql.Identifier(REGISTRY_TABLE)
        ),
        (name,),
    ).fetchone()
    if row is None:
        return None
    data = row[0] if isinstance(row[0], dict) else json.loads(row[0])
    return ModelIdentity(**data), row[1]


def prepare_collection(dsn: str, collection: Collection, identity: ModelIdentity, model_source: str) -> None:
    """Create what the collection needs, or refuse a model other than the one it holds."""
    with register(dsn, f"collection {collection.name!r}", collection.name, identity, model_source, "--table") as (
        conn,
        is_new,
    ):
        scope = collection_scope(collection.name)
        if is_new:
            _refuse_foreign_table(conn, collection)
        if conn.execute("SELECT to_regclass(%s)", (f'public."{collection.name}"',)).fetchone()[0] is None:
            forget(conn, scope)
        migrate(conn, scope, collection.migrations(identity.dimensions))


@contextmanager
def register(
    dsn: str, what: str, name: str, identity: ModelIdentity, model_source: str, option: str
) -> Iterator[tuple[psycopg.Connection, bool]]:
    """In one transaction, under a lock on ``name``: the shared tables, and the registry row of
    ``name`` made or checked against ``identity``; yields the connection and whether the row
    is new, for the caller's own DDL, and commits after it."""
    with connect(dsn, autocommit=False, vector=False) as conn:
        ensure_vector_extension(conn, dsn)
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"vectorize:{name}",))
        migrate_shared(conn, shared_migrations())
        found = _registered(conn, name)
        existing = found[0] if found else None
        if existing is not None and not existing.same_model(identity):
            raise ModelMismatchError(
                f"{what} holds vectors of {existing.name} "
                f"({existing.dimensions} dims); this run's model is {identity.name} "
                f"({identity.dimensions} dims), differing in {'; '.join(identity.differences(existing))}. "
                f"Use another {option}, or --model {existing.name}."
            )
        if existing is None:
            conn.execute(
                sql.SQL(
                    "INSERT INTO {r} (collection, model_name, model_source, identity, identity_key, dimensions) "
                    "VALUES (%s, %s, %s, %s, %s, %s)"
                ).format(r=sql.Identifier(REGISTRY_TABLE)),
                (name, identity.name, model_source, identity.to_json(), identity.key, identity.dimensions),
            )
            logger.info("registered %s for %s", name, identity.key)
        yield conn, existing is None
        conn.commit()


def _refuse_foreign_table(conn, collection: Collection) -> None:
    exists = conn.execute("SELECT to_regclass(%s)", (f'public."{collection.name}"',)).fetchone()[0]
    if exists is not None:
        raise ConfigError(
            f"table {collection.name!r} already exists and is not a vectorize collection: choose another --table"
        )


def _lookup(conn, collection: Collection) -> tuple[ModelIdentity, str] | None:
    """Like ``_registered``, also in a database where no collection was ever made."""
    exists = conn.execute("SELECT to_regclass(%s)", (f"public.{REGISTRY_TABLE}",)).fetchone()[0]
    return _registered(conn, collection.name) if exists else None


def registered_identity(conn, collection: Collection) -> ModelIdentity | None:
    """The model identity of a collection on an open connection; None when there is no such collection."""
    found = _lookup(conn, collection)
    return found[0] if found else None


def registered_model(dsn: str, collection: Collection) -> tuple[ModelIdentity, str]:
    """The model identity of an existing collection and where it was loaded from."""
    with connect(dsn, vector=False) as conn:
        found = _lookup(conn, collection)
    if found is None:
        raise UnknownCollectionError(
            f"no collection {collection.name!r} in this database: "
            f"run `vectorize run ... --table {collection.name}` first"
        )
    return found
