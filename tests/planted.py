"""A collection whose every flaw is planted by hand, so that a check must count each exactly."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from vectorize.identity import ModelIdentity
from vectorize.store.collection import Collection
from vectorize.store.registry import prepare_collection


@dataclass(frozen=True)
class Planted:
    sound: int = 24
    zero: int = 3
    duplicate_groups: int = 2  # each: two different texts holding one vector
    identical_text_ids: int = 3  # one text under this many ids
    other_model: int = 1
    off_norm: int = 2
    near_pairs: int = 1  # two different texts whose vectors are 0.99 alike
    failed: tuple[tuple[str, int], ...] = (("empty_text", 2), ("provider_error", 1))
    pending: int = 1

    @property
    def rows(self) -> int:
        return (
            self.sound
            + self.zero
            + 2 * self.duplicate_groups
            + self.identical_text_ids
            + self.other_model
            + self.off_norm
            + 2 * self.near_pairs
        )

    @property
    def missing(self) -> int:
        return sum(n for _, n in self.failed) + self.pending


def unit(rng: np.random.Generator, dims: int) -> np.ndarray:
    v = rng.standard_normal(dims)
    return (v / np.linalg.norm(v)).astype(np.float32)


def plant_collection(dsn: str, table: str, identity: ModelIdentity, plan: Planted = Planted()) -> None:
    collection = Collection(table)
    prepare_collection(dsn, collection, identity, "tests")
    rng = np.random.default_rng(7)
    dims = identity.dimensions
    rows: list[tuple[str, str, str, np.ndarray]] = []  # id, text, model, vector

    def add(text: str, vector: np.ndarray, model: str = identity.key, key: str | None = None) -> None:
        rows.append((key or f"r{len(rows)}", text, model, vector))

    for i in range(plan.sound):
        add(f"sound text {i}", unit(rng, dims))
    for i in range(plan.zero):
        add(f"zero text {i}", np.zeros(dims, dtype=np.float32))
    for g in range(plan.duplicate_groups):
        shared = unit(rng, dims)
        add(f"duplicate {g} first", shared)
        add(f"duplicate {g} second", shared)
    same = unit(rng, dims)
    for _ in range(plan.identical_text_ids):
        add("the same text under several ids", same)
    for i in range(plan.other_model):
        add(f"other model {i}", unit(rng, dims), model="another-model@x/32d/norm/max128")
    for i in range(plan.off_norm):
        add(f"long vector {i}", 3.0 * unit(rng, dims))
    for p in range(plan.near_pairs):
        base = unit(rng, dims)
        bend = unit(rng, dims)
        bend -= np.dot(bend, base) * base
        bend /= np.linalg.norm(bend)
        near = (0.99 * base + np.sqrt(1 - 0.99**2) * bend).astype(np.float32)
        add(f"near pair {p} first", base)
        add(f"near pair {p} second", near)
    run_id = str(uuid.uuid4())
    with psycopg.connect(dsn, autocommit=True) as conn:
        register_vector(conn)
        with conn.cursor() as cur:
            cur.executemany(
                f'INSERT INTO "{table}" (id, chunk, text, text_sha256, model, embedding) '
                "VALUES (%s, 0, %s, %s, %s, %s)",
                [(k, t, _sha(t), m, v) for k, t, m, v in rows],
            )
            failed = [(reason, i) for reason, n in plan.failed for i in range(n)]
            cur.executemany(
                f'INSERT INTO "{table}_errors" (id, chunk, stage, reason, message) VALUES (%s, 0, %s, %s, %s)',
                [(f"failed {reason} {i}", "prepare", reason, "planted") for reason, i in failed],
            )
            # an error row of an id stored since: counted among errors, not among the missing
            cur.execute(
                f'INSERT INTO "{table}_errors" (id, chunk, stage, reason, message) VALUES (%s, 0, %s, %s, %s)',
                (rows[0][0], "embed", "provider_error", "planted, stored later"),
            )
            cur.executemany(
                f'INSERT INTO "{table}_pending" (run_id, id, chunk, text, text_sha256) VALUES (%s, %s, 0, %s, %s)',
                [(run_id, f"pending {i}", "sound text 0", _sha("sound text 0")) for i in range(plan.pending)],
            )


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
