"""An old database is migrated in place: tables made before the schema had versions (as the
first releases left them) gain what later versions add, their rows kept, and a run after that
changes nothing again."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest

from tests.corpus import write_jsonl
from tests.helpers import query, run
from vectorize.db import connect
from vectorize.errors import ConfigError
from vectorize.identity import ModelIdentity
from vectorize.models import read_identity
from vectorize.search import search
from vectorize.store.collection import Collection, shared_migrations
from vectorize.store.registry import prepare_collection
from vectorize.store.schema import SCHEMA_TABLE, migrate_shared
from vectorize.store.storage import Storage

pytestmark = pytest.mark.usefixtures("ray_cluster")


def _old_database(dsn: str, name: str, identity) -> None:
    """The registry, the run history and one collection with one row, as the first version of
    each made them, and no record of any version."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        for statement in shared_migrations()[0] + Collection(name).migrations(Storage(), identity.dimensions)[0]:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO vectorize_collections (collection, model_name, model_source, identity, identity_key, "
            "dimensions) VALUES (%s, %s, %s, %s, %s, %s)",
            (name, identity.name, "old", identity.to_json(), identity.key, identity.dimensions),
        )
        vector = "[" + ",".join(["0.1"] * identity.dimensions) + "]"
        conn.execute(
            f"INSERT INTO {name} (id, chunk, text, text_sha256, model, embedding) "
            "VALUES ('old', 0, 'kept', 'x', %s, %s)",
            (identity.key, vector),
        )
        conn.execute(
            "INSERT INTO vectorize_runs (run_id, collection, source, model, status, texts_per_second) "
            "VALUES (gen_random_uuid(), %s, 'old.jsonl', %s, 'succeeded', 7.5)",
            (name, identity.key),
        )


def _columns(dsn: str, table: str) -> set[str]:
    found = query(dsn, "SELECT column_name FROM information_schema.columns WHERE table_name = %s", table)
    return {name for (name,) in found}


def test_a_database_made_before_versions_is_migrated_in_place(tmp_path, own_postgres, tiny_model):
    dsn, name = own_postgres.get_uri(), "old_commits"
    identity = read_identity(tiny_model)
    _old_database(dsn, name, identity)
    assert "source_fingerprint" not in _columns(dsn, name) and "metrics" not in _columns(dsn, "vectorize_runs")
    with connect(dsn) as conn:  # searched before any run migrates it
        near = np.full(identity.dimensions, 0.1, dtype=np.float32)
        assert [hit.id for hit in search(conn, name, near, 3, identity)] == ["old"]
        with pytest.raises(ConfigError, match="made before keyword search: run `vectorize run` on it once"):
            search(conn, name, near, 3, identity, mode="hybrid", words="kept")

    source = write_jsonl(tmp_path / "rows.jsonl", [{"id": f"n{i}", "text": f"new row {i}"} for i in range(12)])
    summary = run(source, name, tiny_model, dsn)
    assert summary.embedded == 12 and summary.failed == 0
    assert {"source_fingerprint"} <= _columns(dsn, name) and {"source_fingerprint"} <= _columns(dsn, f"{name}_pending")
    assert {"api_usage", "embedded_new", "refreshed", "deleted", "metrics"} <= _columns(dsn, "vectorize_runs")
    assert "source_state" in _columns(dsn, "vectorize_collections")
    assert query(dsn, "SELECT to_regclass(%s) IS NOT NULL", f"{name}_seen")[0][0]
    assert query(dsn, f"SELECT text FROM {name} WHERE id = 'old'") == [("kept",)]
    assert "texts_per_second" not in _columns(dsn, "vectorize_runs")
    assert query(dsn, "SELECT rows_per_second FROM vectorize_runs WHERE source = 'old.jsonl'") == [(7.5,)]
    versions = dict(query(dsn, f"SELECT scope, version FROM {SCHEMA_TABLE}"))
    assert versions == {"shared": len(shared_migrations()), f"collection:{name}": 6}
    assert query(dsn, "SELECT to_regclass(%s) IS NOT NULL AND to_regclass(%s) IS NOT NULL",
                 f"{name}_batches", f"{name}_batch_inputs")[0][0]  # fmt: skip
    assert "text_search" in _columns(dsn, name)
    assert query(dsn, "SELECT attstorage FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'embedding'",
                 name) == [("m",)]  # fmt: skip
    assert query(dsn, "SELECT storage->>'vector_type' FROM vectorize_collections") == [("vector",)]

    migrated_at = query(dsn, f"SELECT scope, migrated_at FROM {SCHEMA_TABLE} ORDER BY scope")
    prepare_collection(dsn, Collection(name), identity, tiny_model)  # what the next run does first
    assert query(dsn, f"SELECT scope, migrated_at FROM {SCHEMA_TABLE} ORDER BY scope") == migrated_at


def test_a_database_at_an_older_version_gains_only_the_later_steps(own_postgres, tiny_model):
    """As the previous release left it: versioned, its run history's rate under the old name."""
    dsn, identity = own_postgres.get_uri(), read_identity(tiny_model)
    steps = shared_migrations()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        with conn.transaction():
            assert migrate_shared(conn, steps[:5]) == 5  # version 5: before rates were renamed
        conn.execute(
            "INSERT INTO vectorize_runs (run_id, collection, source, model, status, texts_per_second, metrics) "
            """VALUES (gen_random_uuid(), 'c', 's', 'm', 'succeeded', 4.0, '{"texts_per_second": 2.5, "p95": 1}')"""
        )
    prepare_collection(dsn, Collection("after_upgrade"), identity, tiny_model)
    assert query(dsn, "SELECT rows_per_second, metrics FROM vectorize_runs") == [
        (4.0, {"embedded_per_second": 2.5, "p95": 1})
    ]
    assert dict(query(dsn, f"SELECT scope, version FROM {SCHEMA_TABLE}"))["shared"] == len(steps)


def test_an_old_collection_too_wide_for_an_index_keeps_its_storage(own_postgres):
    """Made when a model past 2,000 dimensions got a vector column and no index: that is what
    its storage is taken to be, so its runs go on instead of being refused."""
    dsn, name = own_postgres.get_uri(), "old_wide"
    wide = ModelIdentity(name="wide", revision="api:wide", dimensions=3072, normalized=True, prefix="", max_tokens=8191)
    _old_database(dsn, name, wide)
    assert prepare_collection(dsn, Collection(name), wide, "wide") == Storage(vector_type="vector", index="none")
    recorded = query(dsn, "SELECT storage FROM vectorize_collections WHERE collection = %s", name)[0][0]
    assert (recorded["vector_type"], recorded["index"]) == ("vector", "none")
