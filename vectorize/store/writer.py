"""Idempotent writes of one block of pipeline rows, in one transaction.

Vectors go by binary COPY into a session-local staging table, then one upsert on
(id, chunk) moves them into the collection: a write that Ray retries writes the same rows
again and leaves no duplicate. Error rows are upserted into the errors table; rows whose
vector is to be reused wait in the pending table until the run resolves them.
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from vectorize import rows
from vectorize.store.collection import Collection
from vectorize.summary import WriteCounts

logger = logging.getLogger(__name__)


def _last_per_key(table: pa.Table) -> pa.Table:
    """Keep the last row of each (id, chunk): an upsert may not touch a row twice."""
    keys = list(zip(table.column("id").to_pylist(), table.column("chunk").to_pylist(), strict=True))
    if len(set(keys)) == len(keys):
        return table
    last = {key: i for i, key in enumerate(keys)}
    return table.take(sorted(last.values()))


def _columns(table: pa.Table, *names: str) -> list[list]:
    return [table.column(name).to_pylist() for name in names]


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


def _by_status(table: pa.Table, status: str) -> pa.Table:
    return table.filter(pc.equal(table.column("status"), status))


def write_block(
    conn, collection: Collection, dimensions: int, model_key: str, run_id: str, block: pa.Table, sync: bool = False
) -> WriteCounts:
    """``sync``: also note the block's ids as seen, for the run's deletion of the others."""
    counts = WriteCounts()
    block = _last_per_key(block)
    embedded = _by_status(block, rows.EMBED)
    reuse = _by_status(block, rows.REUSE)
    failed = _by_status(block, rows.ERROR)
    refresh = _by_status(block, rows.REFRESH)
    counts.unchanged = _by_status(block, rows.UNCHANGED).num_rows
    counts.refreshed = refresh.num_rows
    counts.embedded = embedded.num_rows
    counts.reuse_pending = reuse.num_rows
    counts.failed_by_reason = Counter(failed.column("reason").to_pylist())
    if "sanitized" in block.column_names:
        first_chunks = block.filter(pc.and_(pc.not_equal(block.column("status"), rows.ERROR),
                                            pc.equal(block.column("chunk"), 0)))  # fmt: skip
        counts.sanitized = int(pc.sum(pc.cast(pc.fill_null(first_chunks.column("sanitized"), False), pa.int64()))
                               .as_py() or 0)  # fmt: skip
    if embedded.num_rows:
        counts.tokens = int(pc.sum(embedded.column("tokens")).as_py() or 0)
        counts.truncated = int(pc.sum(pc.cast(embedded.column("truncated"), pa.int64())).as_py() or 0)
    with conn.transaction():
        if embedded.num_rows:
            inserted = _upsert_vectors(conn, collection, dimensions, model_key, embedded)
            counts.embedded_new = _new_rows(embedded, inserted)
        if refresh.num_rows:
            _refresh_metadata(conn, collection, refresh)
        _drop_stale_chunks(conn, collection, block)
        if sync:
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


def _upsert_vectors(conn, collection: Collection, dimensions: int, model_key: str, table: pa.Table) -> int:
    """Upsert the rows' vectors; how many of them are new to the collection."""
    stage = sql.Identifier(f"{collection.name}_stage")
    conn.execute(
        sql.SQL(
            """CREATE TEMP TABLE IF NOT EXISTS {s} (id text, chunk integer, text text,
               text_sha256 text, embedding vector({d}), metadata text, fingerprint text) ON COMMIT DELETE ROWS"""
        ).format(s=stage, d=sql.Literal(dimensions))
    )
    vectors = table.column("embedding").combine_chunks().flatten().to_numpy().reshape(-1, dimensions)
    columns = _columns(table, "id", "chunk", "text", "text_sha256", "metadata", "fingerprint")
    with conn.cursor() as cur:
        with cur.copy(
            sql.SQL(
                "COPY {s} (id, chunk, text, text_sha256, embedding, metadata, fingerprint) FROM STDIN (FORMAT BINARY)"
            ).format(s=stage)
        ) as copy:
            copy.set_types(["text", "int4", "text", "text", "vector", "text", "text"])
            for (key, chunk, text, digest, metadata, fp), vector in zip(
                zip(*columns, strict=True), vectors, strict=True
            ):
                copy.write_row((key, chunk, text, digest, np.ascontiguousarray(vector), metadata or "{}", fp))
        # xmax is 0 on a row this statement inserted, set on one it updated
        inserted = cur.execute(
            sql.SQL(
                """WITH written AS (
                     INSERT INTO {t} (id, chunk, text, text_sha256, model, embedding, metadata, embedded_at,
                                      source_fingerprint)
                     SELECT id, chunk, text, text_sha256, %s, embedding, metadata::jsonb, now(), fingerprint
                     FROM {s} ORDER BY id, chunk
                     {vector_upsert}
                     RETURNING xmax = 0 AS inserted)
                   SELECT count(*) FILTER (WHERE inserted) FROM written"""
            ).format(t=collection.table, s=stage, vector_upsert=VECTOR_UPSERT),
            (model_key,),
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
    counts = dict(zip(*_columns(live, "id", "chunks"), strict=True))
    for target in (collection.table, collection.errors):
        conn.execute(
            sql.SQL(
                """DELETE FROM {t} t USING unnest(%s::text[], %s::int[]) AS k(id, chunks)
                   WHERE t.id = k.id AND t.chunk >= k.chunks"""
            ).format(t=target),
            (list(counts), list(counts.values())),
        )


def _refresh_metadata(conn, collection: Collection, table: pa.Table) -> None:
    keys, chunks, metadata, fingerprints = _columns(table, "id", "chunk", "metadata", "fingerprint")
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
    values = zip(*_columns(table, "id", "chunk", "text", "text_sha256", "metadata", "fingerprint"), strict=True)
    with conn.cursor() as cur:
        cur.executemany(
            sql.SQL(
                """INSERT INTO {p} (run_id, id, chunk, text, text_sha256, metadata, source_fingerprint)
                   VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s) ON CONFLICT DO NOTHING"""
            ).format(p=collection.pending),
            [(run_id, k, c, t, h, m or "{}", fp) for k, c, t, h, m, fp in values],
        )


def upsert_errors(conn, errors: sql.Identifier, run_id: str, table: pa.Table) -> None:
    values = zip(*_columns(table, "id", "chunk", "stage", "reason", "message", "raw"), strict=True)
    with conn.cursor() as cur:
        cur.executemany(
            sql.SQL(
                """INSERT INTO {e} (id, chunk, stage, reason, message, raw, run_id)
                   VALUES (%s, %s, %s, %s, %s, %s, %s)
                   {error_upsert}"""
            ).format(e=errors, error_upsert=error_upsert(errors)),
            [(k, c, s, r, m, raw, run_id) for k, c, s, r, m, raw in values],
        )
