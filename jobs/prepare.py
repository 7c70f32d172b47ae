"""Preparation: raw records to prepared rows, then what is already known is marked.

Runs as Ray tasks over the read blocks. Each batch costs one database round trip for the
keys and hashes it holds (none in a collection that was empty as the run began), and one call
to the run's bookkeeping actor for its claims (:class:`jobs.dedupe.Claims`).
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
from vectorize.db import reused_connection
from vectorize.store.collection import Collection
from vectorize.store.lookups import known_rows
from vectorize.text import content_hash

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrepareContext:
    dsn: str
    collection: Collection
    model_key: str
    spec: RecordSpec
    claims: ray.actor.ActorHandle
    signature: str  # what besides the source row shapes the text: see jobs.sql_delta.source_signature
    long_text: LongTextPolicy
    # False where the collection held no row as the run began: every stored row is then the run's own,
    # and the run's claims already answer what a lookup would
    lookups: bool = True


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


def _duplicate_id(record: dict, holder: str) -> dict:
    """A record whose id an earlier record of the run holds: an error row keyed by its own origin."""
    where = holder if not holder.startswith("record:") else "another record"
    message = (f"id {record['id']!r} is already the id of {where} in this run, which is the one stored: "
               "give each record its own id")  # fmt: skip
    return rows.error_row(record["origin"], "prepare", "duplicate_id", message, record["record_raw"])


def _known(ctx: PrepareContext, keys: list[str], chunks: list[int], hashes: list[str]):
    if not ctx.lookups:
        return {}, set()
    return known_rows(reused_connection(ctx.dsn), ctx.collection, ctx.model_key, keys, chunks, hashes)


def split_long_texts(prepared: list[dict], policy: LongTextPolicy) -> list[dict]:
    """Each row whose text is past the window becomes its chunks (``chunk`` 0, 1, ...), or an
    error row when the policy refuses long texts."""
    return [row for record in prepared for row in split_record(record, policy)]


def split_record(row: dict, policy: LongTextPolicy) -> list[dict]:
    """The rows of one prepared record: itself, its chunks, or its ``too_long`` error row."""
    if row["status"] != rows.EMBED:
        return [row]
    pieces = policy.split(row["text"])
    if pieces is None:
        message = f"the text is longer than the model's {policy.window} tokens"
        return [rows.error_row(row["id"], "prepare", "too_long", message, row["text"])]
    if len(pieces) == 1:
        return [row]
    return [
        {**row, "chunk": number, "text": piece, "text_sha256": content_hash(piece), "chunks": len(pieces)}
        for number, piece in enumerate(pieces)
    ]


def prepare_batch(batch: pa.Table, ctx: PrepareContext) -> pa.Table:
    """The batch's rows prepared, the known ones marked, then one call to the run's bookkeeping
    actor for the batch's id and text claims."""
    records = to_prepared_rows(batch, ctx.spec, ctx.signature)
    pieces = [split_record(record, ctx.long_text) for record in records]
    live = [row for record_rows in pieces for row in record_rows if row["status"] == rows.EMBED]
    stored, present = (
        _known(ctx, [r["id"] for r in live], [r["chunk"] for r in live], [r["text_sha256"] for r in live])
        if live
        else ({}, set())
    )
    keyed = [i for i, record in enumerate(records) if record.get("keyed")]
    claim_of = {index: number for number, index in enumerate(keyed)}
    to_claim: list[dict] = []
    claimed_by: list[int] = []  # for each text claim, its record's id claim (-1: none)
    for i, record_rows in enumerate(pieces):
        for row in record_rows:
            if row["status"] == rows.EMBED and _mark_known(row, stored, present):
                to_claim.append(row)
                claimed_by.append(claim_of.get(i, -1))
    if keyed or to_claim:
        holders, owned = ray.get(
            ctx.claims.claim_batch.remote(
                [records[i]["id"] for i in keyed], [records[i]["origin"] for i in keyed],
                [r["text_sha256"] for r in to_claim], [f"{r['id']}\x00{r['chunk']}" for r in to_claim], claimed_by,
            )
        )  # fmt: skip
        for row, mine in zip(to_claim, owned, strict=True):
            if not mine:
                row["status"] = rows.REUSE
        for i, holder in zip(keyed, holders, strict=True):
            if holder != records[i]["origin"]:
                pieces[i] = [_duplicate_id(records[i], holder)]
    return pa.Table.from_pylist([row for record_rows in pieces for row in record_rows], schema=rows.PREPARED_SCHEMA)


def _mark_known(row: dict, stored: dict, present: set[str]) -> bool:
    """Marks a row by what is stored (unchanged, its metadata to refresh, a vector to reuse);
    True where its text is to be claimed for embedding."""
    digest = row["text_sha256"]
    stored_digest, stored_fingerprint = stored.get((row["id"], row["chunk"]), (None, None))
    row["new"] = stored_digest is None  # counted as such even when a retried write finds it stored
    if stored_digest == digest:
        row["status"] = rows.UNCHANGED if stored_fingerprint == row["fingerprint"] else rows.REFRESH
        row["text"] = None
        return False
    if digest in present:
        row["status"] = rows.REUSE
        return False
    return True
