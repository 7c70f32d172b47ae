"""Reads of a collection's rows that the pipeline and the checks make: what is stored under some
keys, which texts already have a vector, a random sample, the nearest rows to a stored one."""

from __future__ import annotations

from pgvector import HalfVector, Vector
from psycopg import sql

from vectorize.store.collection import Collection
from vectorize.store.search import nearest
from vectorize.store.storage import Storage
from vectorize.text import content_hash


def known_rows(
    conn, collection: Collection, model_key: str, keys: list[str], chunks: list[int], hashes: list[str]
) -> tuple[dict[tuple[str, int], tuple[str, str | None]], set[str]]:
    """(id, chunk) -> (text hash, source fingerprint) of the stored rows among ``keys`` and
    ``chunks``, and which of ``hashes`` have a vector of ``model_key`` under any id."""
    stored = conn.execute(
        sql.SQL(
            """SELECT t.id, t.chunk, t.text_sha256, t.source_fingerprint FROM {t} t
               JOIN unnest(%s::text[], %s::int[]) AS k(id, chunk) USING (id, chunk)
               WHERE t.model = %s"""
        ).format(t=collection.table),
        (keys, chunks, model_key),
    ).fetchall()
    present = conn.execute(
        sql.SQL("SELECT DISTINCT text_sha256 FROM {t} WHERE text_sha256 = ANY(%s) AND model = %s").format(
            t=collection.table
        ),
        (list(set(hashes)), model_key),
    ).fetchall()
    return {(k, c): (h, fp) for k, c, h, fp in stored}, {h for (h,) in present}


def is_empty(conn, collection: Collection) -> bool:
    return conn.execute(sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {t})").format(t=collection.table)).fetchone()[0]


def sample_rows(conn, collection: Collection, rows: int, size: int) -> list[tuple[str, int, str]]:
    """Up to ``size`` rows with a usable vector, picked at random over the whole table (about
    1.5 x ``size`` pass a coin toss in one scan, and a shuffle of those keeps ``size``); every
    row when the collection has no more than ``size``."""
    fraction = 1.0 if size >= rows else min(1.0, 1.5 * size / max(rows, 1))
    return conn.execute(
        sql.SQL(
            """SELECT id, chunk, text_sha256 FROM {t}
               WHERE vector_norm(embedding::vector) > 0 AND vector_norm(embedding::vector) < 'Infinity'::float8
                 AND random() < %s
               ORDER BY random() LIMIT %s"""
        ).format(t=collection.table),
        (fraction, size),
    ).fetchall()


def nearest_to_stored(
    conn, collection: Collection, storage: Storage, key: str, chunk: int, hits: int
) -> list[tuple[str, float]] | None:
    """(text hash, cosine similarity) of the ``hits`` rows nearest to the stored row (key, chunk),
    itself included, found as a search finds them; None where that row is gone."""
    own = conn.execute(
        sql.SQL("SELECT embedding FROM {t} WHERE id = %s AND chunk = %s").format(t=collection.table), (key, chunk)
    ).fetchone()
    if own is None:
        return None
    vector = own[0].to_numpy() if isinstance(own[0], HalfVector | Vector) else own[0]
    return [(content_hash(hit.text), hit.similarity) for hit in nearest(conn, collection, storage, vector, hits)]
