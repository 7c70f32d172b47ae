"""Idempotent writes of one block of pipeline rows, in one transaction.

Staged vectors (``store.staging``) move into the collection by one upsert on (id, chunk): a
write that Ray retries writes the same rows again and leaves no duplicate. Error rows are
upserted into the errors table; rows whose vector is to be reused wait in the pending table
until the run resolves them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from vectorize import rows
from vectorize.store.collection import Collection
from vectorize.store.staging import block_counts, by_status, columns_of, stage_table, stage_vectors
from vectorize.summary import WriteCounts

_STAGED = (("id", "text"), ("chunk", "integer"), ("text", "text"), ("text_sha256", "text"), ("metadata", "text"),
           ("fingerprint", "text"))  # fmt: skip

logger = logging.getLogger(__name__)


def _last_per_key(table: pa.Table) -> pa.Table:
    """Keep the last row of each (id, chunk): an upsert may not touch a row twice."""
    keys = list(zip(table.column("id").to_pylist(), table.column("chunk").to_pylist(), strict=True))
    if len(set(keys)) == len(keys):
        return table
    last = {key: i for i, key in enumerate(keys)}
    return table.take(sorted(last.values()))


VECTOR_UPSERT = sql.SQL(
    """ON CONFLICT (id, chunk) DO UPDATE SET text = EXCLUDED.text,
         text_sha256 = EXCLUDED.text_sha256, model = EXCLUDED.model,
         embedding = EXCLUDED.embedding, metadata = EXCLUDED.metadata,
         embedded_at = EXCLUDED.embedded_at, source_fingerprint = EXCLUDED.source_fingerprint"""
)


def error_upsert(errors: sql.Identifier) -> sql.Composed:
    """A row that fails again keeps its first_seen and counts one more attempt."""
    return sql.SQL(
        """ON CONFLICT (id, chunk) DO UPDATE SET stage = EXCLUDED.stage,
             reason = EXCLUDED.reason, message = EXCLUDED.message, raw = EXCLUDED.raw,
             run_id = EXCLUDED.run_id, attempts = {e}.attempts + 1, last_seen = now()"""
    ).format(e=errors)


@dataclass(frozen=True)
class CollectionWrite:
    """Where and how one run writes its blocks into a collection."""

    collection: Collection
    dimensions: int
    model_key: str
    run_id: str
    sync: bool = False  # also note the block's ids as seen, for the run's deletion of the others
    vector_type: str = "vector"  # the collection's: vector or halfvec
    # the collection held no row, error rows included, as the run began: every stored chunk is
    # the run's, whose records come once each, so none is past its record's end
    fresh: bool = False


def write_block(conn, write: CollectionWrite, block: pa.Table) -> WriteCounts:
    collection, run_id = write.collection, write.run_id
    block = _last_per_key(block)
    counts = block_counts(block)
    embedded = by_status(block, rows.EMBED)
    reuse = by_status(block, rows.REUSE)
    failed = by_status(block, rows.ERROR)
    refresh = by_status(block, rows.REFRESH)
    if "sanitized" in block.column_names:
        first_chunks = block.filter(pc.and_(pc.not_equal(block.column("status"), rows.ERROR),
                                            pc.equal(block.column("chunk"), 0)))  # fmt: skip
        counts.sanitized = int(pc.sum(pc.cast(pc.fill_null(first_chunks.column("sanitized"), False), pa.int64()))
                               .as_py() or 0)  # fmt: skip
    with conn.transaction():
        if embedded.num_rows:
            inserted = _upsert_vectors(conn, write, embedded)
            counts.embedded_new = _new_rows(embedded, inserted)
        if refresh.num_rows:
            _refresh_metadata(conn, collection, refresh)
        if not write.fresh:
            _drop_stale_chunks(conn, collection, block)
        if write.sync:
            _note_seen(conn, collection, run_id, set(block.column("id").to_pylist()))
        if reuse.num_rows:
            _add_pending(conn, collection, run_id, reuse)
        if failed.num_rows:
            upsert_errors(conn, collection.errors, run_id, failed)
    return counts


def _new_rows(embedded: pa.Table, inserted: int) -> int:
    """Rows new to the collection: as preparation found them, where it says (a write that Ray
    retries after its commit finds its own rows stored and would call them changed), else as
    the upsert found them."""
    if "new" not in embedded.column_names:
        return inserted
    return int(pc.sum(pc.cast(pc.fill_null(embedded.column("new"), False), pa.int64())).as_py() or 0)


def _upsert_vectors(conn, write: CollectionWrite, table: pa.Table) -> int:
    """Upsert the rows' vectors; how many of them are new to the collection."""
    collection = write.collection
    stage = stage_table(write.dimensions, _STAGED, write.vector_type)
    with conn.cursor() as cur:
        stage_vectors(cur, stage, write.dimensions, _STAGED, table, write.vector_type)
        # xmax is 0 on a row this statement inserted, set on one it updated
        inserted = cur.execute(
            sql.SQL(
                """WITH written AS (
                     INSERT INTO {t} (id, chunk, text, text_sha256, model, embedding, metadata, embedded_at,
                                      source_fingerprint)
                     SELECT id, chunk, text, text_sha256, %s, embedding, coalesce(metadata, '{{}}')::jsonb, now(),
                            fingerprint
                     FROM {s} ORDER BY id, chunk
                     {vector_upsert}
                     RETURNING xmax = 0 AS inserted)
                   SELECT count(*) FILTER (WHERE inserted) FROM written"""
            ).format(t=collection.table, s=stage, vector_upsert=VECTOR_UPSERT),
            (write.model_key,),
        ).fetchone()[0]
        cur.execute(
            sql.SQL("DELETE FROM {e} e USING {s} s WHERE e.id = s.id AND e.chunk = s.chunk").format(
                e=collection.errors, s=stage
            )
        )
    return int(inserted)


def _drop_stale_chunks(conn, collection: Collection, block: pa.Table) -> None:
    """A record that now has fewer chunks loses the stored ones past its new end."""
    live = block.filter(pc.is_valid(block.column("chunks")))
    if not live.num_rows:
        return
    counts = dict(zip(*columns_of(live, "id", "chunks"), strict=True))
    for target in (collection.table, collection.errors):
        conn.execute(
            sql.SQL(
                """DELETE FROM {t} t USING unnest(%s::text[], %s::int[]) AS k(id, chunks)
                   WHERE t.id = k.id AND t.chunk >= k.chunks"""
            ).format(t=target),
            (list(counts), list(counts.values())),
        )


def _refresh_metadata(conn, collection: Collection, table: pa.Table) -> None:
    keys, chunks, metadata, fingerprints = columns_of(table, "id", "chunk", "metadata", "fingerprint")
    conn.execute(
        sql.SQL(
            """UPDATE {t} t SET metadata = k.metadata::jsonb, source_fingerprint = k.fingerprint
               FROM unnest(%s::text[], %s::int[], %s::text[], %s::text[]) AS k(id, chunk, metadata, fingerprint)
               WHERE t.id = k.id AND t.chunk = k.chunk"""
        ).format(t=collection.table),
        (keys, chunks, [m or "{}" for m in metadata], fingerprints),
    )


def _note_seen(conn, collection: Collection, run_id: str, ids: set[str]) -> None:
    with conn.cursor() as cur, cur.copy(sql.SQL("COPY {s} (run_id, id) FROM STDIN").format(s=collection.seen)) as copy:
        for key in ids:
            copy.write_row((run_id, key))


def _add_pending(conn, collection: Collection, run_id: str, table: pa.Table) -> None:
    values = zip(*columns_of(table, "id", "chunk", "text", "text_sha256", "metadata", "fingerprint"), strict=True)
    with conn.cursor() as cur:
        cur.executemany(
            sql.SQL(
                """INSERT INTO {p} (run_id, id, chunk, text, text_sha256, metadata, source_fingerprint)
                   VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s) ON CONFLICT DO NOTHING"""
            ).format(p=collection.pending),
            [(run_id, k, c, t, h, m or "{}", fp) for k, c, t, h, m, fp in values],
        )


def upsert_errors(conn, errors: sql.Identifier, run_id: str, table: pa.Table) -> None:
    values = zip(*columns_of(table, "id", "chunk", "stage", "reason", "message", "raw"), strict=True)
    with conn.cursor() as cur:
        cur.executemany(
            sql.SQL(
                """INSERT INTO {e} (id, chunk, stage, reason, message, raw, run_id)
                   VALUES (%s, %s, %s, %s, %s, %s, %s)
                   {error_upsert}"""
            ).format(e=errors, error_upsert=error_upsert(errors)),
            [(k, c, s, r, m, raw, run_id) for k, c, s, r, m, raw in values],
        )
