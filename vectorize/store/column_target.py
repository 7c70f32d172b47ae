"""Backfill in place (``--dest column``): vectors written into a column of the source table.

Beside the ``vector(d)`` column a ``<column>_sha256`` column keeps the hash of the text each
vector was made from; a row is embedded when its vector IS NULL or its text's hash differs.
Both columns are added when missing; a column of other dimensions (or another type) is
refused. The model identity is registered under ``<table>.<column>``; failed rows go to
``<table>_<column>_errors``. Rows are updated by the id column, cast to its own type so that
its index serves the join.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace

import pyarrow as pa
from psycopg import sql

from vectorize import rows
from vectorize.errors import ConfigError
from vectorize.identity import ModelIdentity
from vectorize.store.collection import errors_table_statement
from vectorize.store.registry import register
from vectorize.store.staging import block_counts, by_status, stage_table, stage_vectors
from vectorize.store.writer import upsert_errors
from vectorize.summary import WriteCounts

logger = logging.getLogger(__name__)
_VALID_COLUMN = re.compile(r"^[a-z_][a-z0-9_]{0,47}$")


@dataclass(frozen=True)
class VectorColumn:
    table: str  # TABLE or SCHEMA.TABLE
    column: str
    id_column: str
    id_type: str = "text"

    def __post_init__(self) -> None:
        if not _VALID_COLUMN.match(self.column):
            raise ConfigError(f"--column {self.column!r}: use lower-case letters, digits and _ (at most 48)")

    @property
    def name(self) -> str:
        return f"{self.table}.{self.column}"

    @property
    def relation(self) -> sql.Identifier:
        return sql.Identifier(*self.table.split("."))

    @property
    def hash_column(self) -> str:
        return f"{self.column}_sha256"

    @property
    def errors(self) -> sql.Identifier:
        return sql.Identifier(f"{self.table.replace('.', '_')}_{self.column}_errors"[:63])


def prepare_column_target(dsn: str, target: VectorColumn, identity: ModelIdentity, origin: str) -> VectorColumn:
    """Register the model for the column, add the columns where missing, refuse a column of
    another type; the target with its id column's type."""
    wanted = f"vector({identity.dimensions})"
    with register(dsn, f"column {target.name}", target.name, identity, origin, "--column") as (conn, _):
        types = dict(
            conn.execute(
                """SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
                   WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped""",
                (target.relation.as_string(conn),),
            ).fetchall()
        )
        found = types.get(target.column)
        if found is not None and found != wanted:
            raise ConfigError(f"column {target.name} is {found}; this model gives {wanted}: choose another --column")
        if target.column not in types or target.hash_column not in types:  # an ALTER locks the whole table
            conn.execute(
                sql.SQL("ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {c} {v}, ADD COLUMN IF NOT EXISTS {h} text").format(
                    t=target.relation,
                    c=sql.Identifier(target.column),
                    v=sql.SQL(wanted),
                    h=sql.Identifier(target.hash_column),
                )
            )
        conn.execute(errors_table_statement(target.errors))
        return replace(target, id_type=types[target.id_column])


def write_column_block(conn, target: VectorColumn, dimensions: int, run_id: str, block: pa.Table) -> WriteCounts:
    counts = block_counts(block)
    embedded = by_status(block, rows.EMBED)
    failed = by_status(block, rows.ERROR)
    with conn.transaction():
        if embedded.num_rows:
            _update_vectors(conn, target, dimensions, embedded)
        if failed.num_rows:
            upsert_errors(conn, target.errors, run_id, failed)
    return counts


def _update_vectors(conn, target: VectorColumn, dimensions: int, table: pa.Table) -> None:
    fields = (("id", "text"), ("text_sha256", "text"))
    stage = stage_table(dimensions, fields, "vector")
    with conn.cursor() as cur:
        stage_vectors(cur, stage, dimensions, fields, table)
        cur.execute(
            sql.SQL(
                """UPDATE {t} t SET {c} = s.embedding, {h} = s.text_sha256 FROM {s} s
                   WHERE t.{id} = s.id::{id_type}"""
            ).format(
                t=target.relation,
                c=sql.Identifier(target.column),
                h=sql.Identifier(target.hash_column),
                s=stage,
                id=sql.Identifier(target.id_column),
                id_type=sql.SQL(target.id_type),
            )
        )
        cur.execute(sql.SQL("DELETE FROM {e} e USING {s} s WHERE e.id = s.id").format(e=target.errors, s=stage))
