"""Where a run's vectors go: a collection, or a vector column of the source table. A target
readies itself once the run holds its lock, and then gives the run its preparation step, its
sink and its end-of-run step; the runner does the rest the same way for both."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import psycopg
from psycopg import sql

from extract.records import RecordSpec
from extract.sources import SourcePlan
from vectorize.chunking import LongTextPolicy
from vectorize.identity import ModelIdentity
from vectorize.store.collection import Collection
from vectorize.store.storage import Storage, StorageRequest
from vectorize.summary import RunSummary, WriteCounts
from vectorize.text import TextTemplate

logger = logging.getLogger(__name__)

# (the preparation function, its context, the sink)
Stage = tuple[Callable[..., Any], Any, Any]


@dataclass(frozen=True)
class Inputs:
    """What every target prepares rows from."""

    source: SourcePlan
    id_field: str
    template: TextTemplate
    long_text: LongTextPolicy
    identity: ModelIdentity
    origin: str  # where the model is from, as the registry records it
    provider_record: dict | None = None  # a remote model's settings, for the registry (no key)
    deferred: bool = False  # the provider embeds after the pipeline (the Batch API)


class TargetRun(Protocol):
    """One run's use of a target, between taking the lock and recording the run's end."""

    source: SourcePlan  # what the pipeline reads
    skipped: int  # source rows known unchanged without reading them
    skipped_failures: Counter  # source rows not read whose error rows stand, by reason
    needs_pipeline: bool
    surely_embeds: bool  # known before reading: the run has texts to embed (its collection is empty)

    def stage(self, summary: RunSummary, claims: Any) -> Stage:
        """``claims``: the run's bookkeeping actor (text and id claims, progress)."""
        ...

    def embed_deferred(
        self, conn: psycopg.Connection, summary: RunSummary, provider: Any, *, progress: bool
    ) -> WriteCounts:
        """After a pipeline that left the texts to embed pending (a deferred provider: the Batch
        API), their vectors; what that wrote."""
        ...

    def finish(self, conn: psycopg.Connection, summary: RunSummary) -> tuple[int, Counter]:
        """After the pipeline, on a connection: rows given a vector without the model, and
        rows that failed after their preparation, by reason."""
        ...

    def end(self, store: psycopg.Connection, summary: RunSummary) -> None:
        """After ``finish``: what a complete run changes besides the rows it wrote."""
        ...


class Target(Protocol):
    name: str  # the collection, or TABLE.COLUMN: the run's lock and its history are under it
    dsn: str  # the database it is in
    embedded_database: bool  # the embedded server of this machine (cluster nodes must reach it)

    def begin(self, store: psycopg.Connection, inputs: Inputs, summary: RunSummary) -> TargetRun: ...


@dataclass(frozen=True)
class CollectionTarget:
    collection: Collection
    dsn: str
    embedded_database: bool
    sync: bool  # delete what the source no longer has
    complete: bool  # the run reads the whole source (no --limit): its state may be recorded
    storage: StorageRequest = field(default_factory=StorageRequest)

    @property
    def name(self) -> str:
        return self.collection.key

    def begin(self, store: psycopg.Connection, inputs: Inputs, summary: RunSummary) -> CollectionRun:
        from vectorize.store.batch_work import forget_waiting
        from vectorize.store.finishing import clear_dead_pending
        from vectorize.store.registry import prepare_collection
        from vectorize.store.source_state import forget_source_state

        storage = prepare_collection(
            self.dsn, self.collection, inputs.identity, inputs.origin, self.storage, inputs.provider_record
        )
        if not inputs.deferred:
            refuse_open_batches(store, self.collection)
            forget_waiting(store, self.collection)  # what waited to be sent again, this run embeds
        run = self._run(store, inputs, storage, exists=True)
        if run.needs_pipeline:
            forget_source_state(store, self.collection)
        clear_dead_pending(store, self.collection, summary.run_id)
        return run

    def preview(self, inputs: Inputs) -> CollectionRun:
        """The run ``begin`` would make, with every check of it, changing nothing (a dry run)."""
        from vectorize.db import connect
        from vectorize.store.registry import prepare_collection

        with connect(self.dsn, vector=False) as conn:
            exists = conn.execute("SELECT to_regclass(%s)", (self.collection.regclass(),)).fetchone()[0] is not None
            storage = prepare_collection(self.dsn, self.collection, inputs.identity, inputs.origin, self.storage,
                                         inputs.provider_record, commit=False)  # fmt: skip
            if exists and not inputs.deferred:
                refuse_open_batches(conn, self.collection)  # as the run would be
            return self._run(conn, inputs, storage, exists=exists)

    def _run(self, conn: psycopg.Connection, inputs: Inputs, storage: Storage, *, exists: bool) -> CollectionRun:
        """What to read where the collection exists: a Postgres source's new and changed rows,
        nothing of files the last complete run read as they are."""
        from jobs.file_state import FILE_KINDS, plan_file_reads
        from jobs.sql_delta import plan_sql_reads, source_signature

        signature = source_signature(inputs.id_field, inputs.template, inputs.long_text)
        source, reads, files = inputs.source, None, None
        if source.kind == "sql" and exists:
            reads = plan_sql_reads(conn, self.collection, source, signature, self.sync)
            if reads.only_ids is not None:
                source = replace(source, only_ids=reads.only_ids)
        elif source.kind in FILE_KINDS and exists and self.complete:
            files = plan_file_reads(conn, self.collection, source, signature, self.sync)
        empty, no_errors = (True, True) if not exists else conn.execute(
            sql.SQL("SELECT NOT EXISTS (SELECT FROM {t}), NOT EXISTS (SELECT FROM {e})").format(
                t=self.collection.table, e=self.collection.errors)).fetchone()  # fmt: skip
        return CollectionRun(self, inputs, storage, source, signature, reads, exists, empty, files,
                             fresh=empty and no_errors)  # fmt: skip


def refuse_open_batches(conn, collection: Collection) -> None:
    """A run without the Batch API on a collection whose batches are still open would pay for
    their texts again: refused."""
    from vectorize.errors import ConfigError
    from vectorize.store.batch_work import open_submissions

    count = len(open_submissions(conn, collection))
    if count:
        raise ConfigError(
            f"collection {collection.name!r} has {count} Batch API batch{'es' if count > 1 else ''} open: run "
            "the same command with --batch-api to collect (or with --batch-api --cancel to cancel), then run it "
            "again without --batch-api"
        )


@dataclass
class CollectionRun:
    target: CollectionTarget
    inputs: Inputs
    storage: Storage
    source: SourcePlan
    signature: str
    reads: Any  # jobs.sql_delta.SqlReadPlan of a Postgres source; None for others
    exists: bool = True  # False: the collection is not made yet (a dry run's), nothing to look up
    empty: bool = False  # the collection holds no row yet
    files: Any = None  # jobs.file_state.FileReadPlan of a file source; None for others
    fresh: bool = False  # nor does its errors table: nothing stored predates the run

    @property
    def skipped(self) -> int:
        if self.files is not None:
            return self.files.unchanged_rows
        return self.reads.skipped if self.reads is not None else 0

    @property
    def surely_embeds(self) -> bool:
        return self.empty

    @property
    def skipped_failures(self) -> Counter:
        return Counter(self.files.failed_by_reason) if self.files is not None else Counter()

    @property
    def needs_pipeline(self) -> bool:
        if self.files is not None:
            return self.files.state is not None
        return self.reads is None or self.reads.skipped < self.reads.rows

    def _write(self, summary: RunSummary) -> Any:
        from vectorize.store.writer import CollectionWrite

        return CollectionWrite(
            self.target.collection,
            self.inputs.identity.dimensions,
            self.inputs.identity.key,
            summary.run_id,
            sync=self.target.sync and self.source.kind != "sql",  # a SQL source's ids are known from its fingerprints
            vector_type=self.storage.vector_type,
            fresh=self.fresh,
        )

    def stage(self, summary: RunSummary, claims: Any) -> Stage:
        from jobs.sink import PgvectorDatasink

        prepare, context = self.preparation(claims)
        return prepare, context, PgvectorDatasink(self.target.dsn, self._write(summary), meter=claims)

    def preparation(self, claims: Any) -> tuple[Callable[..., Any], Any]:
        """The preparation step and its context; ``claims``: the run's bookkeeping actor."""
        from jobs.prepare import PrepareContext, prepare_batch

        target, inputs = self.target, self.inputs
        records = RecordSpec(inputs.id_field, inputs.template, self.source.flatten, self.source.metadata_fields)
        context = PrepareContext(target.dsn, target.collection, inputs.identity.key, records, claims, self.signature,
                                 inputs.long_text, lookups=self.exists and not self.empty)  # fmt: skip
        return prepare_batch, context

    def embed_deferred(
        self, conn: psycopg.Connection, summary: RunSummary, provider: Any, *, progress: bool
    ) -> WriteCounts:
        import asyncio

        from jobs.batch_phase import BatchBackfill

        backfill = BatchBackfill(conn, self._write(summary), provider, progress=progress)
        summary.batch_api = asyncio.run(backfill.run())
        return backfill.counts

    def finish(self, conn: psycopg.Connection, summary: RunSummary) -> tuple[int, Counter]:
        from vectorize.store.finishing import build_vector_index, resolve_pending

        resolved = resolve_pending(conn, self.target.collection, self.inputs.identity.key, summary.run_id,
                                   keep_waiting=self.inputs.deferred)  # fmt: skip
        build_vector_index(conn, self.target.collection, self.storage, self.inputs.identity.dimensions)
        return resolved

    def end(self, store: psycopg.Connection, summary: RunSummary) -> None:
        from jobs.file_state import recorded_files_state
        from vectorize.store.finishing import delete_ids, delete_unseen
        from vectorize.store.source_state import record_source_state

        collection, reads = self.target.collection, self.reads
        if self.target.sync:
            if reads is not None:
                summary.deleted = delete_ids(store, collection, reads.gone)
            elif not self.needs_pipeline:  # files as the last synced run read them: nothing is gone
                summary.deleted = 0
            else:
                summary.deleted = delete_unseen(store, collection, summary.run_id)
        if not self.target.complete or (summary.batch_api is not None and summary.batch_api.waiting_rows > 0):
            return
        if reads is not None and reads.state is not None:
            record_source_state(store, collection, reads.state, synced=self.target.sync)
        elif self.files is not None and self.files.state is not None:
            state = recorded_files_state(self.files.state, summary.rows_read, summary.failed_by_reason)
            record_source_state(store, collection, state, synced=self.target.sync)


@dataclass(frozen=True)
class ColumnTarget:
    """``--dest column``: vectors into a column of the source table, where missing or stale."""

    column: Any  # vectorize.store.column_target.VectorColumn
    dsn: str  # the source's own database
    embedded_database: bool = False

    @property
    def name(self) -> str:
        return self.column.name

    def begin(self, store: psycopg.Connection, inputs: Inputs, summary: RunSummary) -> ColumnRun:
        from vectorize.store.column_target import prepare_column_target

        column = prepare_column_target(self.dsn, self.column, inputs.identity, inputs.origin)
        statement = inputs.source.sql.backfill_statement(column.column, column.hash_column)
        return ColumnRun(self, inputs, column, replace(inputs.source, statement=statement))


@dataclass
class ColumnRun:
    target: ColumnTarget
    inputs: Inputs
    column: Any  # the VectorColumn with its id column's type
    source: SourcePlan
    skipped: int = 0
    skipped_failures: Counter = field(default_factory=Counter)
    needs_pipeline: bool = True
    surely_embeds: bool = False  # the column's vectors are compared row by row as they are read

    def stage(self, summary: RunSummary, claims: Any) -> Stage:
        from jobs.backfill import BackfillContext, ColumnDatasink, prepare_backfill_batch

        inputs = self.inputs
        sink = ColumnDatasink(self.target.dsn, self.column, inputs.identity.dimensions, summary.run_id, claims)
        return (
            prepare_backfill_batch,
            BackfillContext(RecordSpec(inputs.id_field, inputs.template), inputs.long_text),
            sink,
        )

    def embed_deferred(
        self, conn: psycopg.Connection, summary: RunSummary, provider: Any, *, progress: bool
    ) -> WriteCounts:
        raise AssertionError("the plan refuses a deferred provider for a column")

    def finish(self, conn: psycopg.Connection, summary: RunSummary) -> tuple[int, Counter]:
        return 0, Counter()

    def end(self, store: psycopg.Connection, summary: RunSummary) -> None:
        return None
