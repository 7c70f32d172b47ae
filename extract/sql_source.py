"""A Postgres table or query as a source, read in parallel by ``ray.data.read_sql``.

Every row arrives as one JSON object (``to_jsonb`` of the row: timestamps, numbers, UUIDs
and JSON columns all keep a readable form), with its id as text and a fingerprint of the
whole row: ``hash_record_extended`` (a 64-bit hash of every column by its type's own hash),
or md5 of the row's text where a column's type has no hash function (json, geometry).
Preparation then treats it like a JSON record; the fingerprint lets a rerun read only the
rows that changed since they were stored. The source is checked before any
work: a table, column or query that does not exist or fails is one line naming it.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass

import psycopg
from psycopg import sql

from extract.json_source import POSITION_COLUMN, RAW_COLUMN
from vectorize.db import connect, redact_dsn
from vectorize.errors import SourceError

logger = logging.getLogger(__name__)

FINGERPRINT_COLUMN = "_fingerprint"
STORED_HASH_COLUMN = "_stored_sha256"  # --dest column: the hash of the text the row's vector is from
MISSING_COLUMN = "_missing"  # --dest column: the row has no vector
ROWS_PER_SHARD = 50_000  # bounds a read task's memory; below that, one shard per CPU
MAX_SHARDS = 256
_TYPED_HASH = "hash_record_extended(q, 0)::text"
_TEXT_HASH = "md5(q::text)"
SQL_PREFIXES = ("postgresql://", "postgres://")


def shard_count(rows: int, cpus: int) -> int:
    """One shard per CPU so that every core reads, more where a shard would pass
    ROWS_PER_SHARD rows; no shard of under 1,000 rows, whose task costs more than it reads."""
    wanted = max(cpus, math.ceil(rows / ROWS_PER_SHARD))
    return max(1, min(MAX_SHARDS, wanted, rows // 1000))


def is_sql_source(spec: str) -> bool:
    return spec.startswith(SQL_PREFIXES)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass(frozen=True)
class SqlSource:
    dsn: str
    table: str | None
    query: str | None
    id_column: str
    row_hash: str = _TYPED_HASH

    @property
    def display(self) -> str:
        return f"{redact_dsn(self.dsn)} {'table ' + self.table if self.table else 'query'}"

    def relation(self) -> sql.Composable:
        if self.table:
            return sql.Identifier(*self.table.split("."))
        return sql.SQL("({})").format(sql.SQL(self.query))

    def connect(self) -> psycopg.Connection:
        return connect(self.dsn, vector=False, what="the source database")

    def rows_statement(self, only_ids: bool = False) -> sql.Composed:
        """Each row as JSON, its id as text and its fingerprint; with ``only_ids`` the rows
        whose ids are in the array parameter."""
        statement = sql.SQL(
            "SELECT to_jsonb(q)::text AS {raw}, (q.{id})::text AS {pos}, {hash} AS {fp} FROM {rel} q"
        ).format(
            hash=sql.SQL(self.row_hash),
            raw=sql.Identifier(RAW_COLUMN),
            pos=sql.Identifier(POSITION_COLUMN),
            fp=sql.Identifier(FINGERPRINT_COLUMN),
            id=sql.Identifier(self.id_column),
            rel=self.relation(),
        )
        if only_ids:
            statement += sql.SQL(" WHERE (q.{id})::text = ANY(%s)").format(id=sql.Identifier(self.id_column))
        return statement

    def backfill_statement(self, column: str, hash_column: str) -> sql.Composed:
        """Each row as JSON without the vector and hash columns, its id as text, the hash of the
        text its vector was made from and whether it has one (``--dest column``)."""
        return sql.SQL(
            """SELECT (to_jsonb(q) - {c_name} - {h_name})::text AS {raw}, (q.{id})::text AS {pos},
                      q.{h} AS {stored}, q.{c} IS NULL AS {missing} FROM {rel} q"""
        ).format(
            c_name=sql.Literal(column),
            h_name=sql.Literal(hash_column),
            raw=sql.Identifier(RAW_COLUMN),
            pos=sql.Identifier(POSITION_COLUMN),
            id=sql.Identifier(self.id_column),
            h=sql.Identifier(hash_column),
            c=sql.Identifier(column),
            stored=sql.Identifier(STORED_HASH_COLUMN),
            missing=sql.Identifier(MISSING_COLUMN),
            rel=self.relation(),
        )

    def fingerprints(self) -> dict[str, str]:
        """id -> fingerprint of every source row, computed by the server (no row leaves it)."""
        statement = sql.SQL("SELECT (q.{id})::text, {hash} FROM {rel} q").format(
            id=sql.Identifier(self.id_column), hash=sql.SQL(self.row_hash), rel=self.relation()
        )
        with self.connect() as conn:
            return dict(conn.execute(statement).fetchall())

    def table_state(self) -> tuple[int, int] | None:
        """(rows, sum of the rows' xmin) of a table source; None for a query. Every insert or
        update gives a row a newer transaction id and every delete lowers the count, so an equal
        state means an unchanged table, without hashing a row.

        The sum is taken through ``age()`` (a reference id minus the row's, no text cast per
        row): with r the age of transaction id 3, rows * r - sum of the ages = sum(xmin - 3)."""
        if not self.table:
            return None
        with self.connect() as conn:
            rows, ages, reference = conn.execute(
                sql.SQL("SELECT count(*), coalesce(sum(age(xmin)::bigint), 0), age('3'::xid) FROM {rel}").format(
                    rel=self.relation()
                )
            ).fetchone()
        return int(rows), int(rows) * int(reference) - int(ages)

    def read(
        self,
        num_cpus: float,
        only_ids: list[str] | None = None,
        shards: int | None = None,
        statement: sql.Composed | None = None,
    ):
        """A Ray dataset of the rows (or of ``only_ids``), sharded on the id; ``statement``
        replaces :meth:`rows_statement`."""
        import ray.data

        with self.connect() as conn:
            statement = (statement or self.rows_statement(only_ids is not None)).as_string(conn)
            count = len(only_ids) if only_ids is not None else self._count(conn)
        if only_ids is not None:
            statement = statement.replace("%s", "\x00").replace("%", "%%").replace("\x00", "%s")
        if shards is None:
            shards = shard_count(count, int(ray.cluster_resources().get("CPU", 1)))
        logger.info("reading %s rows of %s in %s shards", count, self.display, shards)
        return ray.data.read_sql(
            statement,
            functools.partial(psycopg.connect, self.dsn),
            sql_params=(only_ids,) if only_ids is not None else None,
            # Ray shards with MOD(ABS(fn(key)), n); Postgres' md5 gives text, so the hash is
            # written into the key with an empty function name: ABS((hashtext(id)::bigint)).
            shard_keys=[f"hashtext({POSITION_COLUMN})::bigint"],
            shard_hash_fn="",
            parallelism=shards,
            num_cpus=num_cpus,
        )

    def _count(self, conn: psycopg.Connection) -> int:
        return conn.execute(sql.SQL("SELECT count(*) FROM {rel} q").format(rel=self.relation())).fetchone()[0]


def open_sql_source(
    dsn: str, table: str | None, query: str | None, id_column: str
) -> tuple[SqlSource, tuple[str, ...]]:
    """The source and its columns, checked: the table exists, or the query runs."""
    if (table is None) == (query is None):
        raise SourceError("a Postgres source needs --source-table TABLE or --query 'SELECT ...' (one of them)")
    parts = table.split(".") if table is not None else []
    if table is not None and (len(parts) > 2 or not all(p.strip() for p in parts)):
        raise SourceError(f"--source-table {table!r}: give TABLE or SCHEMA.TABLE")
    source = SqlSource(dsn, table, query.strip().rstrip(";") if query else None, id_column)
    with source.connect() as conn:
        if table is not None:
            found = conn.execute("SELECT to_regclass(%s)", (sql.Identifier(*table.split(".")).as_string(conn),))
            if found.fetchone()[0] is None:
                raise SourceError(f"the source table {table!r} does not exist in {redact_dsn(dsn)}")
        try:
            cursor = conn.execute(sql.SQL("SELECT * FROM {rel} q LIMIT 0").format(rel=source.relation()))
        except psycopg.Error as exc:
            what = f"the source table {table!r}" if table else "the --query"
            raise SourceError(f"{what} cannot be read: {_first_line(exc)}") from None
        columns = tuple(column.name for column in cursor.description or ())
        try:
            conn.execute(
                sql.SQL("SELECT {h} FROM {rel} q LIMIT 1").format(h=sql.SQL(_TYPED_HASH), rel=source.relation())
            )
        except psycopg.Error:  # a column type without a hash function
            source = SqlSource(source.dsn, source.table, source.query, id_column, _TEXT_HASH)
    return source, columns
