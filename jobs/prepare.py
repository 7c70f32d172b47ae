"""Preparation: raw records to prepared rows, then what is already known is marked.

Runs as Ray tasks over the read blocks. Each batch costs one database round trip for the
keys and hashes it holds, and calls to the run's bookkeeping actor for its claims
(:class:`jobs.dedupe.Claims`).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import pyarrow as pa
import ray

from extract.json_source import POSITION_COLUMN, RAW_COLUMN, decode_raw
from extract.records import RecordSpec, fallback_key, prepare_json_line, prepare_record, raw_text
from extract.sql_source import FINGERPRINT_COLUMN
from vectorize import rows
from vectorize.chunking import LongTextPolicy
from vectorize.db import connect
from vectorize.store.collection import Collection
from vectorize.store.lookups import known_rows
from vectorize.text import content_hash

logger = logging.getLogger(__name__)
_connections: dict[str, object] = {}


@dataclass(frozen=True)
class PrepareContext:
    dsn: str
    collection: Collection
    model_key: str
    spec: RecordSpec
    claims: ray.actor.ActorHandle
    signature: str  # what besides the source row shapes the text: see jobs.sql_delta.source_signature
    long_text: LongTextPolicy
    lookups: bool = True  # False: the collection does not exist yet (a dry run), nothing is stored


def task_connection(dsn: str):
    """This worker process's connection to ``dsn``, opened once and reused by its tasks."""
    conn = _connections.get(dsn)
    if conn is None or conn.closed or conn.broken:
        conn = connect(dsn, vector=False)
        _connections[dsn] = conn
    return conn


def to_prepared_rows(batch: pa.Table, spec: RecordSpec, signature: str) -> list[dict]:
    """Prepared rows, each with its source fingerprint: the md5 of the whole row where the
    source gives one (a SQL row), else a hash of the text and metadata. Each row also carries
    ``origin`` (where the record is: its position, else a digest of it) and ``record_raw``
    (for a later error row), which the table built from the rows leaves out."""
    if RAW_COLUMN in batch.column_names:
        raws = [decode_raw(raw) for raw in batch.column(RAW_COLUMN).to_pylist()]
        positions = batch.column(POSITION_COLUMN).to_pylist()
        prepared = [prepare_json_line(raw, pos, spec) for raw, pos in zip(raws, positions, strict=True)]
        # a SQL row's position is its id, which two rows of a query may share
        origins = positions if FINGERPRINT_COLUMN not in batch.column_names else _digest_origins(raws)
    else:
        records = batch.to_pylist()
        raws = [raw_text(record) for record in records]
        origins = _digest_origins(raws)
        prepared = [prepare_record(record, spec, None, raw) for record, raw in zip(records, raws, strict=True)]
    given = batch.column(FINGERPRINT_COLUMN).to_pylist() if FINGERPRINT_COLUMN in batch.column_names else None
    for i, row in enumerate(prepared):
        row["origin"], row["record_raw"] = origins[i], raws[i]
        if row["status"] == rows.EMBED:
            digest = given[i] if given else hashlib.md5(f"{row['text_sha256']}{row['metadata']}".encode()).hexdigest()
            row["fingerprint"] = f"{signature}:{digest}"
    return prepared


def _digest_origins(raws: list[str]) -> list[str]:
    """Origins for records without a position: a digest of the record, numbered when the
    same record comes again in the batch (so that each copy is accounted for)."""
    seen: dict[str, int] = {}
    origins = []
    for raw in raws:
        origin = fallback_key(raw, None)
        copies = seen[origin] = seen.get(origin, 0) + 1
        origins.append(origin if copies == 1 else f"{origin}#{copies}")
    return origins


def claim_ids(prepared: list[dict], claims: ray.actor.ActorHandle) -> None:
    """One record per id in a run: a record whose id an earlier record already holds becomes
    an error row (``duplicate_id``) keyed by its own origin, naming the record that holds it."""
    keyed = [row for row in prepared if row.get("keyed")]
    if not keyed:
        return
    holders = ray.get(claims.claim_ids.remote([r["id"] for r in keyed], [r["origin"] for r in keyed]))
    for row, holder in zip(keyed, holders, strict=True):
        if holder != row["origin"]:
            where = holder if not holder.startswith("record:") else "another record"
            row.update(
                rows.error_row(
                    row["origin"], "prepare", "duplicate_id",
                    f"id {row['id']!r} is already the id of {where} in this run, which is the one stored: "
                    "give each record its own id", row["record_raw"],
                )
            )  # fmt: skip


def _known(ctx: PrepareContext, keys: list[str], chunks: list[int], hashes: list[str]):
    if not ctx.lookups:
        return {}, set()
    return known_rows(task_connection(ctx.dsn), ctx.collection, ctx.model_key, keys, chunks, hashes)


def split_long_texts(prepared: list[dict], policy: LongTextPolicy) -> list[dict]:
    """Each row whose text is past the window becomes its chunks (``chunk`` 0, 1, ...), or an
    error row when the policy refuses long texts."""
    out = []
    for row in prepared:
        if row["status"] != rows.EMBED:
            out.append(row)
            continue
        pieces = policy.split(row["text"])
        if pieces is None:
            out.append(
                rows.error_row(
                    row["id"], "prepare", "too_long", f"the text is longer than the model's {policy.window} tokens",
                    row["text"],
                )
            )  # fmt: skip
        elif len(pieces) == 1:
            out.append(row)
        else:
            for number, piece in enumerate(pieces):
                out.append(
                    {**row, "chunk": number, "text": piece, "text_sha256": content_hash(piece), "chunks": len(pieces)}
                )
    return out


def prepare_batch(batch: pa.Table, ctx: PrepareContext) -> pa.Table:
    prepared = to_prepared_rows(batch, ctx.spec, ctx.signature)
    claim_ids(prepared, ctx.claims)
    prepared = split_long_texts(prepared, ctx.long_text)
    live = [row for row in prepared if row["status"] == rows.EMBED]
    if live:
        stored, present = _known(
            ctx, [r["id"] for r in live], [r["chunk"] for r in live], [r["text_sha256"] for r in live]
        )
        to_claim = []
        for row in live:
            digest = row["text_sha256"]
            stored_digest, stored_fingerprint = stored.get((row["id"], row["chunk"]), (None, None))
            row["new"] = stored_digest is None  # counted as such even when a retried write finds it stored
            if stored_digest == digest:
                row["status"] = rows.UNCHANGED if stored_fingerprint == row["fingerprint"] else rows.REFRESH
                row["text"] = None
            elif digest in present:
                row["status"] = rows.REUSE
            else:
                to_claim.append(row)
        if to_claim:
            owned = ray.get(
                ctx.claims.claim.remote(
                    [r["text_sha256"] for r in to_claim], [f"{r['id']}\x00{r['chunk']}" for r in to_claim]
                )
            )
            for row, mine in zip(to_claim, owned, strict=True):
                if not mine:
                    row["status"] = rows.REUSE
    return pa.Table.from_pylist(prepared, schema=rows.PREPARED_SCHEMA)
