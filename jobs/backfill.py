"""Backfill in place, the Ray side: preparation that skips rows whose vector is current, and
the sink that writes vectors into the source table's column (see
:mod:`vectorize.store.column_target`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from ray.data.block import Block

from extract.records import RecordSpec
from extract.sql_source import MISSING_COLUMN, POSITION_COLUMN, STORED_HASH_COLUMN
from jobs.prepare import split_long_texts, to_prepared_rows
from jobs.sink import CountingDatasink
from vectorize import rows
from vectorize.chunking import LongTextPolicy
from vectorize.store.column_target import VectorColumn, write_column_block
from vectorize.summary import WriteCounts

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackfillContext:
    spec: RecordSpec
    long_text: LongTextPolicy


def prepare_backfill_batch(batch: pa.Table, ctx: BackfillContext) -> pa.Table:
    """Rows to embed: those with no vector, or whose text's hash is not the stored one."""
    current = dict(
        zip(
            batch.column(POSITION_COLUMN).to_pylist(),
            zip(batch.column(STORED_HASH_COLUMN).to_pylist(), batch.column(MISSING_COLUMN).to_pylist(), strict=True),
            strict=True,
        )
    )
    prepared = split_long_texts(to_prepared_rows(batch, ctx.spec, ""), ctx.long_text)
    for row in prepared:
        if row["status"] == rows.EMBED:
            digest, missing = current.get(row["id"], (None, True))
            if digest == row["text_sha256"] and not missing:
                row["status"], row["text"] = rows.UNCHANGED, None
    return pa.Table.from_pylist(prepared, schema=rows.PREPARED_SCHEMA)


class ColumnDatasink(CountingDatasink):
    """Into the source table's vector column (and the column's errors table)."""

    def __init__(self, dsn: str, target: VectorColumn, dimensions: int, run_id: str, meter: Any = None) -> None:
        super().__init__(dsn, meter)
        self.target = target
        self.dimensions = dimensions
        self.run_id = run_id

    def get_name(self) -> str:
        return "PgvectorColumn"

    def write_block(self, conn, block: Block) -> WriteCounts:
        return write_column_block(conn, self.target, self.dimensions, self.run_id, block)
