"""A collection's Batch API work: each submission (its batch, its file, its figures) and the
texts it covers, so that a run that dies after submitting is followed by one that collects
instead of paying again.

A text is in at most one open batch (``<table>_batch_inputs`` is keyed by its hash). Its row
names the submission and the request that carry it, or no submission: then it waits to be sent
again (its batch expired, was cancelled or failed, or its request was refused as a whole). A
text's row goes once its vector or its error is stored.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from vectorize.store.collection import Collection

PAGE = 50_000  # texts read to pack at a time: one request file's worth at most


@dataclass(frozen=True)
class Submission:
    key: str  # ours, also in the batch's metadata
    batch_id: str | None
    file_id: str | None
    status: str  # "uploading" until the batch exists, then the Batch API's
    tokens: int
    inputs: int
    created: float  # Unix time


@dataclass(frozen=True)
class WaitingText:
    text_sha256: str
    text: str
    attempts: int
    alone: bool
    last_error: str | None


def texts_to_submit(conn, collection: Collection, model_key: str, run_id: str) -> list[WaitingText]:
    """Up to ``PAGE`` distinct texts of the run's pending rows, in hash order, that have no
    vector of the model and are in no open batch."""
    found = conn.execute(
        sql.SQL(
            """SELECT DISTINCT ON (p.text_sha256) p.text_sha256, p.text, coalesce(i.attempts, 0),
                      coalesce(i.alone, false), i.last_error
               FROM {p} p LEFT JOIN {i} i USING (text_sha256)
               WHERE p.run_id = %(run)s AND i.batch_key IS NULL
                 AND NOT coalesce(i.failed, false)
                 AND NOT EXISTS (SELECT 1 FROM {t} t WHERE t.text_sha256 = p.text_sha256 AND t.model = %(model)s)
               ORDER BY p.text_sha256 LIMIT %(page)s"""
        ).format(p=collection.pending, i=collection.batch_inputs, t=collection.table),
        {"run": run_id, "model": model_key, "page": PAGE},
    ).fetchall()
    return [WaitingText(*row) for row in found]


def forget_unneeded(conn, collection: Collection, run_id: str) -> None:
    """At a run's start: texts that failed in an earlier run are tried again, as error rows are;
    texts waiting to be sent again that no row of this run has any more (the source changed) go."""
    conn.execute(
        sql.SQL(
            """DELETE FROM {i} i WHERE i.batch_key IS NULL AND (i.failed
                 OR NOT EXISTS (SELECT 1 FROM {p} p WHERE p.run_id = %s AND p.text_sha256 = i.text_sha256))"""
        ).format(i=collection.batch_inputs, p=collection.pending),
        (run_id,),
    )


def mark_failed(conn, collection: Collection, shas: list[str]) -> None:
    """These texts became error rows: no later batch of this run takes them."""
    conn.execute(
        sql.SQL(
            """INSERT INTO {i} (text_sha256, tokens, truncated, failed)
               SELECT sha, 0, false, true FROM unnest(%s::text[]) sha
               ON CONFLICT (text_sha256) DO UPDATE SET failed = true, batch_key = NULL"""
        ).format(i=collection.batch_inputs),
        (shas,),
    )


def texts_of(conn, collection: Collection, run_id: str, shas: list[str]) -> list[tuple[str, str]]:
    """(hash, text) of these texts, as the run's pending rows hold them."""
    return conn.execute(
        sql.SQL(
            "SELECT DISTINCT ON (text_sha256) text_sha256, text FROM {p} WHERE run_id = %s AND text_sha256 = ANY(%s)"
        ).format(p=collection.pending),
        (run_id, shas),
    ).fetchall()


def record_submission(
    conn, collection: Collection, key: str, inputs: list[tuple[str, int, str, int, bool]], tokens: int, requests: int
) -> None:
    """The submission and the texts it covers, (custom_id, position, text hash, tokens,
    truncated) each, in one transaction, before its file is uploaded."""
    with conn.transaction():
        conn.execute(
            sql.SQL(
                "INSERT INTO {b} (key, status, requests, inputs, tokens) VALUES (%s, 'uploading', %s, %s, %s)"
            ).format(b=collection.batches),
            (key, requests, len(inputs), tokens),
        )
        with conn.cursor() as cur:
            cur.executemany(
                sql.SQL(
                    """INSERT INTO {i} (text_sha256, batch_key, custom_id, position, tokens, truncated)
                       VALUES (%s, %s, %s, %s, %s, %s)
                       ON CONFLICT (text_sha256) DO UPDATE SET batch_key = EXCLUDED.batch_key,
                         custom_id = EXCLUDED.custom_id, position = EXCLUDED.position, tokens = EXCLUDED.tokens,
                         truncated = EXCLUDED.truncated"""
                ).format(i=collection.batch_inputs),
                [(sha, key, custom_id, position, count, cut) for custom_id, position, sha, count, cut in inputs],
            )


def note_file(conn, collection: Collection, key: str, file_id: str) -> None:
    conn.execute(sql.SQL("UPDATE {b} SET file_id = %s WHERE key = %s").format(b=collection.batches), (file_id, key))


def note_batch(conn, collection: Collection, key: str, batch_id: str, status: str, error: str | None = None) -> None:
    conn.execute(
        sql.SQL("UPDATE {b} SET batch_id = %s, status = %s, error = coalesce(%s, error) WHERE key = %s").format(
            b=collection.batches
        ),
        (batch_id, status, error, key),
    )


def open_submissions(conn, collection: Collection) -> list[Submission]:
    """Submissions not yet collected, oldest first."""
    found = conn.execute(
        sql.SQL(
            """SELECT key, batch_id, file_id, status, tokens, inputs, extract(epoch FROM created_at)
               FROM {b} WHERE NOT collected ORDER BY created_at, key"""
        ).format(b=collection.batches)
    ).fetchall()
    return [Submission(k, b, f, s, int(t), int(n), float(c)) for k, b, f, s, t, n, c in found]


@dataclass(frozen=True)
class CoveredText:
    text_sha256: str
    custom_id: str
    position: int
    tokens: int
    truncated: bool
    attempts: int


def covered_texts(conn, collection: Collection, key: str) -> list[CoveredText]:
    found = conn.execute(
        sql.SQL(
            """SELECT text_sha256, custom_id, position, tokens, truncated, attempts FROM {i}
               WHERE batch_key = %s ORDER BY custom_id, position"""
        ).format(i=collection.batch_inputs),
        (key,),
    ).fetchall()
    return [CoveredText(*row) for row in found]


def close_submission(
    conn, collection: Collection, key: str, status: str, tokens_billed: int, error: str | None = None
) -> None:
    """The submission collected; its texts not sent again are gone from the work table with it."""
    conn.execute(
        sql.SQL(
            """UPDATE {b} SET collected = true, status = %s, tokens_billed = %s, error = coalesce(%s, error),
                 finished_at = now() WHERE key = %s"""
        ).format(b=collection.batches),
        (status, tokens_billed, error, key),
    )
    conn.execute(sql.SQL("DELETE FROM {i} WHERE batch_key = %s").format(i=collection.batch_inputs), (key,))


def send_again(
    conn, collection: Collection, shas: list[str], alone: list[bool], reason: list[str], *, count_attempt: bool = True
) -> None:
    """These texts wait for a later batch, one attempt more each (unless the batch never ran)."""
    conn.execute(
        sql.SQL(
            """UPDATE {i} i SET batch_key = NULL, custom_id = NULL, position = NULL,
                 attempts = i.attempts + {more},
                 alone = i.alone OR k.alone, last_error = k.reason
               FROM unnest(%s::text[], %s::bool[], %s::text[]) AS k(text_sha256, alone, reason)
               WHERE i.text_sha256 = k.text_sha256"""
        ).format(i=collection.batch_inputs, more=sql.Literal(int(count_attempt))),
        (shas, alone, reason),
    )


def hold_unsubmitted(conn, collection: Collection, model_key: str, run_id: str) -> None:
    """The run's texts that no batch took (``--no-wait`` on a full queue, ``--cancel``) wait to be
    sent, as texts sent again do: their rows stay pending, and count as waiting."""
    conn.execute(
        sql.SQL(
            """INSERT INTO {i} (text_sha256, tokens, truncated)
               SELECT DISTINCT p.text_sha256, 0, false FROM {p} p
               WHERE p.run_id = %s AND NOT EXISTS (
                 SELECT 1 FROM {t} t WHERE t.text_sha256 = p.text_sha256 AND t.model = %s)
               ON CONFLICT (text_sha256) DO NOTHING"""
        ).format(i=collection.batch_inputs, p=collection.pending, t=collection.table),
        (run_id, model_key),
    )


def forget_waiting(conn, collection: Collection) -> None:
    """A run without the Batch API embeds what waited to be sent again itself."""
    conn.execute(sql.SQL("DELETE FROM {i} WHERE batch_key IS NULL").format(i=collection.batch_inputs))


def submitted_texts(conn, collection: Collection, shas: list[str]) -> set[str]:
    """Which of these texts an open batch holds."""
    found = conn.execute(
        sql.SQL("SELECT text_sha256 FROM {i} WHERE batch_key IS NOT NULL AND text_sha256 = ANY(%s)").format(
            i=collection.batch_inputs
        ),
        (shas,),
    ).fetchall()
    return {sha for (sha,) in found}


def waiting_rows(conn, collection: Collection, run_id: str) -> int:
    """The run's pending rows whose text is in an open batch or waits to be sent."""
    return conn.execute(
        sql.SQL(
            """SELECT count(*) FROM {p} p WHERE p.run_id = %s
                 AND EXISTS (SELECT 1 FROM {i} i WHERE i.text_sha256 = p.text_sha256 AND NOT i.failed)"""
        ).format(p=collection.pending, i=collection.batch_inputs),
        (run_id,),
    ).fetchone()[0]


def first_rows(conn, collection: Collection, run_id: str, shas: list[str]) -> list[tuple]:
    """For each text, the run's first pending row holding it (id, chunk, text, hash, metadata,
    fingerprint): the one it is embedded for; the others are given its vector at the run's end."""
    return conn.execute(
        sql.SQL(
            """SELECT DISTINCT ON (text_sha256) id, chunk, text, text_sha256, metadata::text, source_fingerprint
               FROM {p} WHERE run_id = %s AND text_sha256 = ANY(%s) ORDER BY text_sha256, id, chunk"""
        ).format(p=collection.pending),
        (run_id, shas),
    ).fetchall()


def drop_pending(conn, collection: Collection, run_id: str, keys: list[tuple[str, int]]) -> None:
    conn.execute(
        sql.SQL(
            """DELETE FROM {p} p USING unnest(%s::text[], %s::int[]) AS k(id, chunk)
               WHERE p.run_id = %s AND p.id = k.id AND p.chunk = k.chunk"""
        ).format(p=collection.pending),
        ([k for k, _ in keys], [c for _, c in keys], run_id),
    )
