"""What a run does to its collection besides writing blocks: clearing the pending rows of a run
that died, resolving its own pending rows once the pipeline is done, deleting what the source
no longer has (``--sync``), and building the vector index."""

from __future__ import annotations

import logging
import os
from collections import Counter

import psycopg
from psycopg import sql

from vectorize.store.collection import Collection
from vectorize.store.storage import Storage
from vectorize.store.writer import VECTOR_UPSERT, error_upsert

logger = logging.getLogger(__name__)


def clear_dead_pending(conn, collection: Collection, run_id: str) -> int:
    """Delete pending rows left by runs that died (called under the collection's run lock, so
    no other run is live): their records are read again by this run."""
    return conn.execute(sql.SQL("DELETE FROM {p} WHERE run_id <> %s").format(p=collection.pending), (run_id,)).rowcount


def resolve_pending(
    conn, collection: Collection, model_key: str, run_id: str, *, keep_waiting: bool = False
) -> tuple[int, Counter]:
    """Give each pending row the vector already stored for its text; the rest become errors,
    but (``keep_waiting``: a Batch API run) for those whose text waits for a batch."""
    waits = _waits_for_batch(collection) if keep_waiting else sql.SQL("false")
    with conn.transaction():
        reused = conn.execute(
            sql.SQL(
                """WITH moved AS (
                     INSERT INTO {t} (id, chunk, text, text_sha256, model, embedding, metadata, embedded_at,
                                      source_fingerprint)
                     SELECT p.id, p.chunk, p.text, p.text_sha256, %(model)s, s.embedding, p.metadata, now(),
                            p.source_fingerprint
                     FROM {p} p CROSS JOIN LATERAL (
                       SELECT embedding FROM {t} WHERE text_sha256 = p.text_sha256 AND model = %(model)s
                       LIMIT 1) s
                     WHERE p.run_id = %(run)s
                     {vector_upsert}
                     RETURNING id, chunk),
                   cleared AS (
                     DELETE FROM {e} e USING moved m WHERE e.id = m.id AND e.chunk = m.chunk)
                   SELECT count(*) FROM moved"""
            ).format(t=collection.table, p=collection.pending, e=collection.errors, vector_upsert=VECTOR_UPSERT),
            {"model": model_key, "run": run_id},
        ).fetchone()[0]
        orphans = conn.execute(
            sql.SQL(
                """WITH orphans AS (
                     DELETE FROM {p} p WHERE p.run_id = %(run)s AND NOT EXISTS (
                       SELECT 1 FROM {t} t WHERE t.id = p.id AND t.chunk = p.chunk
                         AND t.text_sha256 = p.text_sha256 AND t.model = %(model)s)
                       AND NOT {waits}
                     RETURNING p.id, p.chunk, p.text)
                   INSERT INTO {e} (id, chunk, stage, reason, message, raw, run_id)
                   SELECT id, chunk, 'embed', 'duplicate_of_failed',
                     'the same text failed to embed under another id in this run', text, %(run)s
                   FROM orphans
                   {error_upsert}
                   RETURNING 1"""
            ).format(
                t=collection.table,
                p=collection.pending,
                e=collection.errors,
                error_upsert=error_upsert(collection.errors),
                waits=waits,
            ),
            {"model": model_key, "run": run_id},
        ).fetchall()
        conn.execute(
            sql.SQL("DELETE FROM {p} p WHERE run_id = %s AND NOT {waits}").format(p=collection.pending, waits=waits),
            (run_id,),
        )
    return int(reused), Counter({"duplicate_of_failed": len(orphans)} if orphans else {})


def _waits_for_batch(collection: Collection) -> sql.Composed:
    """A pending row ``p`` whose text is in an open Batch API batch, or waits to be sent again:
    it stays for the run that collects it."""
    return sql.SQL("EXISTS (SELECT 1 FROM {i} i WHERE i.text_sha256 = p.text_sha256 AND NOT i.failed)").format(
        i=collection.batch_inputs
    )


def delete_ids(conn, collection: Collection, ids: list[str]) -> int:
    """Delete these ids (every chunk, and their errors); how many the collection held."""
    if not ids:
        return 0
    with conn.transaction():
        deleted = conn.execute(
            sql.SQL(
                "WITH gone AS (DELETE FROM {t} WHERE id = ANY(%s) RETURNING id) SELECT count(DISTINCT id) FROM gone"
            ).format(t=collection.table),
            (ids,),
        ).fetchone()[0]
        conn.execute(sql.SQL("DELETE FROM {e} WHERE id = ANY(%s)").format(e=collection.errors), (ids,))
    return int(deleted)


def delete_unseen(conn, collection: Collection, run_id: str) -> int:
    """Delete the ids a --sync run did not see in its source (every chunk, and their errors);
    how many ids went."""
    with conn.transaction():
        deleted = conn.execute(
            sql.SQL(
                """WITH gone AS (
                     DELETE FROM {t} t WHERE NOT EXISTS (SELECT 1 FROM {s} s WHERE s.run_id = %(run)s AND s.id = t.id)
                     RETURNING id)
                   SELECT count(DISTINCT id) FROM gone"""
            ).format(t=collection.table, s=collection.seen),
            {"run": run_id},
        ).fetchone()[0]
        conn.execute(
            sql.SQL(
                "DELETE FROM {e} e WHERE NOT EXISTS (SELECT 1 FROM {s} s WHERE s.run_id = %(run)s AND s.id = e.id)"
            ).format(e=collection.errors, s=collection.seen),
            {"run": run_id},
        )
        conn.execute(sql.SQL("DELETE FROM {s} WHERE run_id = %s").format(s=collection.seen), (run_id,))
    return int(deleted)


# Memory for building the HNSW index: pgvector builds far faster while the graph fits in
# maintenance_work_mem (figures in the README); Postgres takes only what the graph needs.
INDEX_BUILD_MEMORY = os.environ.get("VECTORIZE_INDEX_BUILD_MEMORY", "1GB")


def build_vector_index(conn, collection: Collection, storage: Storage, dimensions: int) -> None:
    """The collection's vector index as its storage says, built once after the first bulk load
    (an exact scan where it says none); then fresh statistics."""
    statement = collection.vector_index_statement(storage, dimensions)
    if statement is not None:
        try:
            with conn.transaction():
                if INDEX_BUILD_MEMORY:
                    conn.execute("SELECT set_config('maintenance_work_mem', %s, true)", (INDEX_BUILD_MEMORY,))
                conn.execute(statement)
        except (psycopg.errors.OutOfMemory, psycopg.errors.DiskFull, psycopg.errors.InvalidParameterValue) as exc:
            # a parallel build's shared memory can exceed a small /dev/shm (a container's 64 MB);
            # or $VECTORIZE_INDEX_BUILD_MEMORY is not a size Postgres reads
            logger.warning("building the HNSW index with maintenance_work_mem %s failed (%s); "
                           "again with the server's own setting", INDEX_BUILD_MEMORY, exc)  # fmt: skip
            conn.execute(statement)
    conn.execute(sql.SQL("ANALYZE {t}").format(t=collection.table))
