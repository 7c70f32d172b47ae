"""The collection registry: one model identity per collection, checked before any work."""

from __future__ import annotations

import json
import logging

from psycopg import sql

from vectorize.db import connect, ensure_vector_extension
from vectorize.errors import ConfigError, ModelMismatchError
from vectorize.identity import ModelIdentity
from vectorize.store.collection import REGISTRY_TABLE, Collection, create_shared_tables

logger = logging.getLogger(__name__)


def _registered(conn, collection: Collection) -> tuple[ModelIdentity, str] | None:
    row = conn.execute(
        sql.SQL("SELECT identity, model_source FROM {r} WHERE collection = %s").format(
            r=sql.Identifier(REGISTRY_TABLE)
        ),
        (collection.name,),
    ).fetchone()
    if row is None:
        return None
    data = row[0] if isinstance(row[0], dict) else json.loads(row[0])
    return ModelIdentity(**data), row[1]


def prepare_collection(dsn: str, collection: Collection, identity: ModelIdentity, model_source: str) -> None:
    """Create what the collection needs, or refuse a model other than the one it holds."""
    ensure_vector_extension(dsn)
    with connect(dsn, autocommit=False) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"vectorize:{collection.name}",))
        for statement in create_shared_tables():
            conn.execute(statement)
        found = _registered(conn, collection)
        existing = found[0] if found else None
        if existing is not None and not existing.same_model(identity):
            raise ModelMismatchError(
                f"collection {collection.name!r} holds vectors of {existing.name} "
                f"({existing.dimensions} dims); this run's model is {identity.name} "
                f"({identity.dimensions} dims), differing in {'; '.join(identity.differences(existing))}. "
                f"Use another --table, or --model {existing.name}."
            )
        if existing is None:
            _refuse_foreign_table(conn, collection)
            conn.execute(
                sql.SQL(
                    "INSERT INTO {r} (collection, model_name, model_source, identity, identity_key, dimensions) "
                    "VALUES (%s, %s, %s, %s, %s, %s)"
                ).format(r=sql.Identifier(REGISTRY_TABLE)),
                (collection.name, identity.name, model_source, identity.to_json(), identity.key, identity.dimensions),
            )
            logger.info("registered collection %s for %s", collection.name, identity.key)
        for statement in collection.create_statements(identity.dimensions):
            conn.execute(statement)
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
    return _registered(conn, collection) if exists else None


def registered_identity(conn, collection: Collection) -> ModelIdentity | None:
    """The model identity of a collection on an open connection; None when there is no such collection."""
    found = _lookup(conn, collection)
    return found[0] if found else None


def registered_model(dsn: str, collection: Collection) -> tuple[ModelIdentity, str]:
    """The model identity of an existing collection and where it was loaded from."""
    with connect(dsn, vector=False) as conn:
        found = _lookup(conn, collection)
    if found is None:
        raise ConfigError(
            f"no collection {collection.name!r} in this database: "
            f"run `vectorize run ... --table {collection.name}` first"
        )
    return found
