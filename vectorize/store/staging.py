"""What every block write shares: its figures, and its vectors staged by binary COPY.

A block's vectors go by binary COPY into a session-local staging table that empties at
commit; one statement then moves them to where they belong (an upsert into a collection, an
update of a source table's column), and the errors of the rows now stored are deleted.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pgvector import HalfVector
from psycopg import sql

from vectorize import rows
from vectorize.summary import WriteCounts

# COPY's binary type of each staged SQL type
_COPY_TYPES = {"text": "text", "integer": "int4"}


def by_status(block: pa.Table, status: str) -> pa.Table:
    return block.filter(pc.equal(block.column("status"), status))


def columns_of(table: pa.Table, *names: str) -> list[list]:
    return [table.column(name).to_pylist() for name in names]


def block_counts(block: pa.Table) -> WriteCounts:
    """The figures of one block as the pipeline marked its rows, before anything is written."""
    counts = WriteCounts()
    embedded = by_status(block, rows.EMBED)
    counts.embedded = embedded.num_rows
    counts.unchanged = by_status(block, rows.UNCHANGED).num_rows
    counts.refreshed = by_status(block, rows.REFRESH).num_rows
    counts.reuse_pending = by_status(block, rows.REUSE).num_rows
    counts.failed_by_reason = Counter(by_status(block, rows.ERROR).column("reason").to_pylist())
    if embedded.num_rows:
        counts.tokens = int(pc.sum(embedded.column("tokens")).as_py() or 0)
        counts.truncated = int(pc.sum(pc.cast(embedded.column("truncated"), pa.int64())).as_py() or 0)
    return counts


def stage_table(dimensions: int, fields: Sequence[tuple[str, str]], vector_type: str) -> sql.Identifier:
    """The session's staging table of this shape. A session holds one per shape it wrote (a
    collection and then its next version with other dimensions, a column), not one per
    collection: every commit of a write empties each of them."""
    shape = "|".join([str(dimensions), vector_type, *(f"{name} {kind}" for name, kind in fields)])
    return sql.Identifier(f"vectorize_stage_{hashlib.blake2b(shape.encode(), digest_size=8).hexdigest()}")


def stage_vectors(
    cur,
    stage: sql.Identifier,
    dimensions: int,
    fields: Sequence[tuple[str, str]],
    table: pa.Table,
    vector_type: str = "vector",
) -> None:
    """COPY the table's ``embedding`` and the named (column, SQL type) fields into ``stage``,
    created on first use in this session as (fields..., embedding vector_type(d))."""
    names = [name for name, _ in fields]
    definition = sql.SQL(", ").join(
        [sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(kind)) for name, kind in fields]
        + [sql.SQL("embedding {}({})").format(sql.SQL(vector_type), sql.Literal(dimensions))]
    )
    cur.execute(
        sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {s} ({d}) ON COMMIT DELETE ROWS").format(s=stage, d=definition)
    )
    listed = sql.SQL(", ").join(sql.Identifier(name) for name in [*names, "embedding"])
    vectors = table.column("embedding").combine_chunks().flatten().to_numpy().reshape(-1, dimensions)
    with cur.copy(sql.SQL("COPY {s} ({c}) FROM STDIN (FORMAT BINARY)").format(s=stage, c=listed)) as copy:
        copy.set_types([_COPY_TYPES[kind] for _, kind in fields] + [vector_type])
        as_value = HalfVector if vector_type == "halfvec" else np.ascontiguousarray
        for values, vector in zip(zip(*columns_of(table, *names), strict=True), vectors, strict=True):
            copy.write_row((*values, as_value(vector)))
