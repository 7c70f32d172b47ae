"""A collection's tables and their DDL."""

from __future__ import annotations

import re
from dataclasses import dataclass

from psycopg import sql

from vectorize.errors import ConfigError
from vectorize.store.storage import Storage

REGISTRY_TABLE = "vectorize_collections"
RUNS_TABLE = "vectorize_runs"
_VALID_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,47}$")
# A collection's versions besides the one searched (``vectorize.store.versions``): the one a
# migration builds, and the one the last migration replaced. Each is the same set of tables
# under the same names in a schema of its own, so that a swap moves tables and renames nothing.
LIVE_SCHEMA = "public"
NEXT_SCHEMA = "vectorize_next"
PREVIOUS_SCHEMA = "vectorize_previous"
# each table of a collection, by the suffix of its name
TABLE_SUFFIXES = ("", "_errors", "_pending", "_seen", "_batches", "_batch_inputs")


@dataclass(frozen=True)
class Collection:
    """Target table ``name`` with its errors table and its pending-reuse table beside it, in
    ``schema``: the live collection, or a version of it that a migration keeps."""

    name: str
    schema: str = LIVE_SCHEMA

    def __post_init__(self) -> None:
        if not _VALID_NAME.match(self.name):
            raise ConfigError(
                f"--table {self.name!r}: use lower-case letters, digits and _ (at most 48, not starting with a digit)"
            )

    @property
    def key(self) -> str:
        """Its name in the registry, the run history and the run lock: a version other than the
        live one is ``schema.name``."""
        return self.name if self.schema == LIVE_SCHEMA else f"{self.schema}.{self.name}"

    def in_schema(self, schema: str) -> Collection:
        return Collection(self.name, schema)

    def regclass(self, suffix: str = "") -> str:
        """The text ``to_regclass`` takes for one of its tables."""
        return f'"{self.schema}"."{self.name}{suffix}"'

    def _named(self, suffix: str) -> sql.Identifier:
        return sql.Identifier(self.schema, f"{self.name}{suffix}")

    @property
    def table(self) -> sql.Identifier:
        return self._named("")

    @property
    def errors(self) -> sql.Identifier:
        return self._named("_errors")

    @property
    def pending(self) -> sql.Identifier:
        return self._named("_pending")

    @property
    def seen(self) -> sql.Identifier:
        """The ids a --sync run read from its source; the others are deleted at its end."""
        return self._named("_seen")

    @property
    def batches(self) -> sql.Identifier:
        """The run's Batch API submissions (``vectorize.store.batch_work``)."""
        return self._named("_batches")

    @property
    def batch_inputs(self) -> sql.Identifier:
        """The texts in open Batch API submissions, or waiting to be sent again."""
        return self._named("_batch_inputs")

    def tables(self) -> list[sql.Identifier]:
        return [self._named(suffix) for suffix in TABLE_SUFFIXES]

    def index(self, suffix: str) -> sql.Identifier:
        """An index's name: Postgres puts an index in its table's schema, so it takes no schema."""
        return sql.Identifier(f"{self.name}_{suffix}")

    def _keyword_index(self, storage: Storage, ident: dict) -> list[sql.Composed]:
        return [
            sql.SQL(
                """ALTER TABLE {t} ADD COLUMN IF NOT EXISTS text_search tsvector
                   GENERATED ALWAYS AS (to_tsvector({config}::regconfig, text)) STORED"""
            ).format(config=sql.Literal(storage.text_search), **ident),
            sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} USING gin (text_search)").format(
                i=self.index("text_search_idx"), **ident
            ),
        ]

    def migrations(self, storage: Storage, dimensions: int) -> list[list[sql.Composed]]:
        """The collection's schema, one step a version (``vectorize.store.schema``)."""
        ident = {"t": self.table, "e": self.errors, "p": self.pending, "s": self.seen, "b": self.batches,
                 "bi": self.batch_inputs}  # fmt: skip
        own_schema = (
            [sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))]
            if self.schema != LIVE_SCHEMA
            else []
        )
        return [
            [
                *own_schema,
                sql.SQL(
                    """CREATE TABLE IF NOT EXISTS {t} (
                        id text NOT NULL,
                        chunk integer NOT NULL DEFAULT 0,
                        text text NOT NULL,
                        text_sha256 text NOT NULL,
                        model text NOT NULL,
                        embedding {vector} NOT NULL,
                        metadata jsonb NOT NULL DEFAULT '{{}}',
                        embedded_at timestamptz NOT NULL DEFAULT now(),
                        PRIMARY KEY (id, chunk))"""
                ).format(vector=storage.column_type(dimensions), **ident),
                sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} (text_sha256)").format(
                    i=self.index("sha256_idx"), **ident
                ),
                errors_table_statement(self.errors),
                sql.SQL(
                    """CREATE TABLE IF NOT EXISTS {p} (
                        run_id uuid NOT NULL,
                        id text NOT NULL,
                        chunk integer NOT NULL,
                        text text NOT NULL,
                        text_sha256 text NOT NULL,
                        metadata jsonb NOT NULL DEFAULT '{{}}',
                        PRIMARY KEY (run_id, id, chunk))"""
                ).format(**ident),
            ],
            # the source row's fingerprint: a row whose fingerprint is stored is not read again,
            # and a changed one only has its metadata updated
            [
                sql.SQL("ALTER TABLE {t} ADD COLUMN IF NOT EXISTS source_fingerprint text").format(**ident),
                sql.SQL("ALTER TABLE {p} ADD COLUMN IF NOT EXISTS source_fingerprint text").format(**ident),
            ],
            # the ids a --sync run read
            [
                sql.SQL("CREATE UNLOGGED TABLE IF NOT EXISTS {s} (run_id uuid NOT NULL, id text NOT NULL)").format(
                    **ident
                ),
                sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {s} (run_id, id)").format(i=self.index("seen_idx"), **ident),
            ],
            # the stored text's words, for keyword and hybrid search; metadata, for filters
            [
                *(self._keyword_index(storage, ident) if storage.keyword_search else []),
                sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} USING gin (metadata jsonb_path_ops)").format(
                    i=self.index("metadata_idx"), **ident
                ),
            ],
            # vectors kept in the row rather than in the TOAST table, where the text and its words
            # go first: a filtered search reads each matching row's vector from its heap page alone
            # (rows stored before this keep theirs until they are written again)
            [sql.SQL("ALTER TABLE {t} ALTER COLUMN embedding SET STORAGE MAIN").format(**ident)],
            # Batch API submissions and the texts they cover: a run that dies after submitting is
            # followed by one that collects what was paid for
            [
                sql.SQL(
                    """CREATE TABLE IF NOT EXISTS {b} (
                        key text PRIMARY KEY,
                        batch_id text,
                        file_id text,
                        status text NOT NULL,
                        requests integer NOT NULL,
                        inputs integer NOT NULL,
                        tokens bigint NOT NULL,
                        tokens_billed bigint NOT NULL DEFAULT 0,
                        collected boolean NOT NULL DEFAULT false,
                        error text,
                        created_at timestamptz NOT NULL DEFAULT now(),
                        finished_at timestamptz)"""
                ).format(**ident),
                sql.SQL(
                    """CREATE TABLE IF NOT EXISTS {bi} (
                        text_sha256 text PRIMARY KEY,
                        batch_key text,
                        custom_id text,
                        position integer,
                        tokens integer NOT NULL,
                        truncated boolean NOT NULL,
                        attempts integer NOT NULL DEFAULT 0,
                        alone boolean NOT NULL DEFAULT false,
                        failed boolean NOT NULL DEFAULT false,
                        last_error text)"""
                ).format(**ident),
                sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {bi} (batch_key)").format(
                    i=self.index("batch_inputs_key_idx"), **ident
                ),
            ],
        ]

    def vector_index_statement(self, storage: Storage, dimensions: int) -> sql.Composed | None:
        """None: the collection is searched by an exact scan."""
        return storage.index_statement(self.index("embedding_hnsw"), self.table, dimensions)


def errors_table_statement(errors: sql.Identifier) -> sql.Composed:
    return sql.SQL(
        """CREATE TABLE IF NOT EXISTS {e} (
            id text NOT NULL,
            chunk integer NOT NULL DEFAULT 0,
            stage text NOT NULL,
            reason text NOT NULL,
            message text NOT NULL,
            raw text,
            attempts integer NOT NULL DEFAULT 1,
            run_id uuid,
            first_seen timestamptz NOT NULL DEFAULT now(),
            last_seen timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (id, chunk))"""
    ).format(e=errors)


def shared_migrations() -> list[list[sql.Composed]]:
    """The registry's and the run history's schema, one step a version (``vectorize.store.schema``)."""
    registry, runs = sql.Identifier(REGISTRY_TABLE), sql.Identifier(RUNS_TABLE)
    return [
        [
            sql.SQL(
                """CREATE TABLE IF NOT EXISTS {r} (
                collection text PRIMARY KEY,
                model_name text NOT NULL,
                model_source text NOT NULL,
                identity jsonb NOT NULL,
                identity_key text NOT NULL,
                dimensions integer NOT NULL,
                created_at timestamptz NOT NULL DEFAULT now())"""
            ).format(r=registry),
            sql.SQL(
                """CREATE TABLE IF NOT EXISTS {r} (
                run_id uuid PRIMARY KEY,
                collection text NOT NULL,
                source text NOT NULL,
                model text NOT NULL,
                status text NOT NULL,
                error text,
                started_at timestamptz NOT NULL DEFAULT now(),
                finished_at timestamptz,
                rows_read bigint,
                embedded bigint,
                reused bigint,
                unchanged bigint,
                failed bigint,
                failed_by_reason jsonb,
                truncated bigint,
                tokens bigint,
                seconds double precision,
                texts_per_second double precision)"""
            ).format(r=runs),
        ],
        # requests, retries, 429s, tokens billed and cost of a remote provider
        [sql.SQL("ALTER TABLE {r} ADD COLUMN IF NOT EXISTS api_usage jsonb").format(r=runs)],
        # the state of a Postgres source table when a run last read all of it
        [sql.SQL("ALTER TABLE {r} ADD COLUMN IF NOT EXISTS source_state jsonb").format(r=registry)],
        # embedded rows that were new, metadata-only updates, rows deleted by --sync
        [
            sql.SQL(
                "ALTER TABLE {r} ADD COLUMN IF NOT EXISTS embedded_new bigint, "
                "ADD COLUMN IF NOT EXISTS refreshed bigint, ADD COLUMN IF NOT EXISTS deleted bigint"
            ).format(r=runs)
        ],
        # batch latency, actor utilisation, throughput over time; live while the run goes
        [sql.SQL("ALTER TABLE {r} ADD COLUMN IF NOT EXISTS metrics jsonb").format(r=runs)],
        # one name a rate: rows read per second in the column, texts embedded per second in metrics
        [
            sql.SQL(
                """DO $$ BEGIN
                     IF EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
                                AND table_name = {name} AND column_name = 'texts_per_second') THEN
                       ALTER TABLE {r} RENAME COLUMN texts_per_second TO rows_per_second;
                     END IF;
                   END $$"""
            ).format(r=runs, name=sql.Literal(RUNS_TABLE)),
            sql.SQL(
                """UPDATE {r} SET metrics = (metrics - 'texts_per_second')
                     || jsonb_build_object('embedded_per_second', metrics -> 'texts_per_second')
                   WHERE metrics ? 'texts_per_second'"""
            ).format(r=runs),
        ],
        # how a collection stores its vectors, and a remote model's settings for its searches
        [
            sql.SQL(
                "ALTER TABLE {r} ADD COLUMN IF NOT EXISTS storage jsonb, ADD COLUMN IF NOT EXISTS provider jsonb"
            ).format(r=registry)
        ],
    ]
