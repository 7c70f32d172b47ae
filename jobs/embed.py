"""The embedding job: ``python -m jobs.embed SOURCE --table T ...`` (the same arguments as
``vectorize run``), for ``ray job submit`` and for the CLI.

Everything that can be checked is checked before Ray starts: the source and its fields, the
model, the database and the collection's model identity.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

from extract.records import RecordSpec
from extract.sources import SourcePlan, open_source
from jobs.database_watch import DatabaseWatch
from jobs.live_figures import export_run_totals
from jobs.sql_delta import plan_sql_reads, record_source_state, source_signature
from vectorize.chunking import LocalTokenSpans, LongTextPolicy, long_text_policy, model_dir_of
from vectorize.config import RunSettings
from vectorize.db import connect, lost_database
from vectorize.embedded_pg import database_dsn, given_dsn
from vectorize.errors import (
    ConfigError,
    ProviderStopError,
    StoreError,
    VectorizeError,
    vectorize_cause,
    worker_error,
)
from vectorize.identity import ModelIdentity
from vectorize.models import model_source, read_identity
from vectorize.remote_settings import RemoteSettings
from vectorize.store.collection import Collection
from vectorize.store.registry import prepare_collection
from vectorize.store.run_lock import run_lock
from vectorize.store.runs import mark_abandoned, plain_error, record_end, record_failure, record_start
from vectorize.store.writer import (
    build_vector_index,
    clear_dead_pending,
    delete_ids,
    delete_unseen,
    resolve_pending,
)
from vectorize.summary import ApiUsage, BatchMetrics, RunSummary, WriteCounts
from vectorize.text import TextTemplate

logger = logging.getLogger(__name__)
T = TypeVar("T")


def run_job(settings: RunSettings) -> RunSummary:
    """Run one job; a database that goes away under it is one :class:`StoreError`."""
    try:
        return _run_job(settings)
    except psycopg.OperationalError as exc:
        lost = lost_database(exc, given_dsn(settings.dsn) or "the embedded server")
        if lost is None:  # a failed statement (a deadlock, a full disk), not a lost connection
            raise
        raise lost from exc


def _run_job(settings: RunSettings) -> RunSummary:
    started = time.perf_counter()
    address = settings.ray_address or os.environ.get("RAY_ADDRESS") or ""
    if address.startswith("ray://"):
        from jobs.client_run import run_through_client

        return run_through_client(settings, address)
    if settings.dest == "column":
        return _run_backfill(settings, started)
    if not settings.table:
        raise ConfigError("--table is required: the collection to write (or --dest column)")
    collection = Collection(settings.table)
    if settings.sync and settings.limit is not None:
        raise ConfigError("--sync leaves the collection holding exactly the source's rows: it cannot take --limit")
    source, template, identity, origin, long_text = _checked_inputs(settings)
    dsn = database_dsn(settings.dsn, settings.data_dir)
    with DatabaseWatch(dsn, settings.stall_timeout_s), run_lock(dsn, collection.name) as store:
        prepare_collection(dsn, collection, identity, origin)
        summary = RunSummary(str(uuid.uuid4()), collection.name, source.display, identity.key)
        signature = source_signature(settings.id_field, template, long_text)
        sql_plan = plan_sql_reads(store, collection, source, signature, settings.sync) if source.kind == "sql" else None
        skipped = sql_plan.skipped if sql_plan else 0
        mark_abandoned(store, collection.name)
        clear_dead_pending(store, collection, summary.run_id)
        record_start(store, summary)
        totals, reused, orphans = WriteCounts(), 0, Counter()
        if sql_plan is None or sql_plan.skipped < sql_plan.rows:
            spec = RecordSpec(settings.id_field, template, source.flatten, source.metadata_fields)
            stage = _collection_stage(
                settings, source, spec, identity, summary, (dsn, collection, signature, long_text)
            )

            def finish(conn: Any) -> tuple[int, Counter]:
                resolved = resolve_pending(conn, collection, identity.key, summary.run_id)
                build_vector_index(conn, collection)
                return resolved

            totals, (reused, orphans) = _embed(settings, source, identity, summary, dsn, stage, finish)
        if settings.sync:
            if sql_plan is not None:
                summary.deleted = delete_ids(store, collection, sql_plan.gone)
            else:
                summary.deleted = delete_unseen(store, collection, summary.run_id)
        if sql_plan is not None and sql_plan.state is not None and settings.limit is None:
            record_source_state(store, collection, sql_plan.state, synced=settings.sync)
        return _finished(store, summary, started, totals, reused, orphans, skipped)


def _checked_inputs(settings: RunSettings) -> tuple[SourcePlan, TextTemplate, ModelIdentity, str, LongTextPolicy]:
    """The source, template, model identity (and where it is from) and long-text policy, all
    checked before anything is written."""
    source = open_source(
        settings.source, source_table=settings.source_table, query=settings.query, id_field=settings.id_field
    )
    template = TextTemplate.parse(settings.text or source.default_text)
    source.check_fields(settings.id_field, template)
    if settings.remote is None:
        identity, origin = read_identity(settings.model), model_source(settings.model)
    else:
        settings.remote = settings.remote.resolved()
        identity, origin = remote_model(settings.remote, settings.stall_timeout_s)
    return source, template, identity, origin, _long_text_policy(settings, source, identity)


def _finished(
    store: str | psycopg.Connection,
    summary: RunSummary,
    started: float,
    totals: WriteCounts,
    reused: int = 0,
    orphans: Counter | None = None,
    skipped: int = 0,
) -> RunSummary:
    failed_by_reason = dict(totals.failed_by_reason + (orphans or Counter()))
    summary.rows_read = totals.rows + skipped
    summary.embedded = totals.embedded
    summary.embedded_new = totals.embedded_new
    summary.reused = reused
    summary.unchanged = totals.unchanged + totals.refreshed + skipped
    summary.refreshed = totals.refreshed
    summary.failed = sum(failed_by_reason.values())
    summary.failed_by_reason = failed_by_reason
    summary.truncated = totals.truncated
    summary.sanitized = totals.sanitized
    summary.tokens = totals.tokens
    summary.seconds = time.perf_counter() - started
    record_end(store, summary)
    export_run_totals(summary, "succeeded")
    return summary


def _run_backfill(settings: RunSettings, started: float) -> RunSummary:
    """``--dest column``: vectors into a column of the source table, where missing or stale."""
    from jobs.backfill import BackfillContext, ColumnDatasink, prepare_backfill_batch
    from vectorize.store.column_target import ColumnTarget, prepare_column_target

    if not settings.source.startswith(("postgresql://", "postgres://")) or not settings.source_table:
        raise ConfigError("--dest column writes into the source table: give postgresql://... --source-table TABLE")
    for given, option in ((settings.table, "--table"), (settings.dsn, "--dsn"), (settings.sync, "--sync")):
        if given:
            raise ConfigError(f"--dest column writes into the source table's own database: drop {option}")
    if settings.long_text == "chunk":
        raise ConfigError("a column holds one vector per row: use --long-text truncate or error")
    settings.long_text = settings.long_text or "truncate"
    target = ColumnTarget(settings.source_table, settings.column, settings.id_field)
    source, template, identity, origin, long_text = _checked_inputs(settings)
    if settings.column in source.fields and f"{settings.column}_sha256" not in source.fields:
        logger.info("column %s exists; its vectors without a hash beside them are made again", target.name)
    dsn = source.sql.dsn
    with DatabaseWatch(dsn, settings.stall_timeout_s), run_lock(dsn, target.name) as store:
        target = prepare_column_target(dsn, target, identity, origin)
        source.statement = source.sql.backfill_statement(target.column, target.hash_column)
        summary = RunSummary(str(uuid.uuid4()), target.name, source.display, identity.key)
        mark_abandoned(store, target.name)
        record_start(store, summary)
        spec = RecordSpec(settings.id_field, template)

        def stage(claims: Any) -> tuple[Callable, Any, Any]:
            sink = ColumnDatasink(dsn, target, identity.dimensions, summary.run_id)
            return prepare_backfill_batch, BackfillContext(spec, long_text), sink

        totals, _ = _embed(settings, source, identity, summary, dsn, stage, lambda conn: None)
        return _finished(store, summary, started, totals)


def _embed(
    settings: RunSettings,
    source: SourcePlan,
    identity: ModelIdentity,
    summary: RunSummary,
    dsn: str,
    stage: Callable[[Any], tuple[Callable, Any, Any]],
    finish: Callable[[Any], T],
) -> tuple[WriteCounts, T]:
    """The Ray pipeline over the rows to read. ``stage(claims)`` gives the preparation
    function, its context and the sink, given the run's actor that holds text claims; ``finish(conn)``
    runs after the pipeline on a database connection. Returns what the sink wrote and what
    ``finish`` gave."""
    import ray

    from jobs.batch_events import RunContext
    from jobs.live_figures import LiveFigures
    from jobs.pipeline import run_pipeline
    from jobs.progress import StallWatch, waiting_for
    from jobs.ray_runtime import (
        check_embedded_database_reach,
        ensure_ray,
        on_driver_node,
        plan_actors,
        plan_remote_actors,
    )
    from jobs.run_actor import RunActor

    started = time.perf_counter()
    ensure_ray(settings.ray_address, progress=settings.progress, worker_logs=settings.worker_logs)
    if given_dsn(settings.dsn) is None and settings.dest == "collection":
        check_embedded_database_reach()
    if settings.remote is None:
        plan = plan_actors(settings.actors, settings.cpus_per_actor, settings.gpus_per_actor)
    else:
        plan = plan_remote_actors(settings.actors, settings.cpus_per_actor)
    logger.info(
        "run %s: %s -> %s with %s, actors %s", summary.run_id, source.display, summary.collection, identity.key, plan
    )
    run_actor = RunActor.options(**on_driver_node()).remote()
    limiters = start_limiters(settings.remote) if settings.remote else None
    prepare_fn, prepare_ctx, sink = stage(run_actor)
    sink.meter = run_actor
    service = settings.remote.endpoint() if settings.remote is not None else None
    refusal = (lambda: refusal_of(limiters)) if limiters else None
    watch = StallWatch(run_actor, settings.stall_timeout_s, lambda: waiting_for(plan, dsn, service), refusal)
    run = RunContext(summary.run_id, summary.collection, run_actor)
    try:
        with watch, LiveFigures(dsn, summary, run_actor):
            run_pipeline(source, settings, (prepare_fn, prepare_ctx), identity, plan, sink, run, limiters)
        summary.batch_metrics = read_batch_metrics(run_actor)
        summary.api_usage, stop = read_budgets(settings.remote, limiters)
        if stop is not None:  # refused while the last batches went: what was answered is written
            raise stop
        with connect(dsn) as conn:
            finished = finish(conn)
    except BaseException as exc:
        exc = watch.check(exc)
        summary.seconds = time.perf_counter() - started
        summary.batch_metrics = read_batch_metrics(run_actor)
        summary.api_usage, stop = read_budgets(settings.remote, limiters)
        ours = exc in (watch.stalled, watch.refused)
        cause = (lost_database(exc, dsn) if not ours else None) or vectorize_cause(exc) or stop
        if not isinstance(cause, StoreError):  # a lost database cannot take it: the next run marks it abandoned
            record_failure(dsn, summary, plain_error(cause or worker_error(exc)))
        export_run_totals(summary, "failed")
        if cause is not None and cause is not exc:
            raise cause from None
        if ours:
            raise exc from None
        if isinstance(exc, VectorizeError | KeyboardInterrupt):
            raise
        raise VectorizeError(f"the run failed: {plain_error(worker_error(exc))}") from exc
    finally:
        for actor in (run_actor, *(limiters or ())):
            if actor is not None:
                ray.kill(actor)
        watch.disarm()
    return sink.totals, finished


def _collection_stage(
    settings: RunSettings, source: SourcePlan, spec: RecordSpec, identity: ModelIdentity, summary: RunSummary, context
) -> Callable[[Any], tuple[Callable, Any, Any]]:
    from jobs.prepare import PrepareContext, prepare_batch
    from jobs.sink import PgvectorDatasink

    dsn, collection, signature, long_text = context

    def stage(claims: Any) -> tuple[Callable, Any, Any]:
        sink = PgvectorDatasink(
            dsn,
            collection,
            identity.dimensions,
            identity.key,
            summary.run_id,
            sync=settings.sync and source.kind != "sql",  # a SQL source's ids are known from its fingerprints
            fail_first_write_marker=settings.fail_first_write_marker,
        )
        return prepare_batch, PrepareContext(dsn, collection, identity.key, spec, claims, signature, long_text), sink

    return stage


def _long_text_policy(settings: RunSettings, source: SourcePlan, identity: ModelIdentity) -> LongTextPolicy:
    mode = settings.long_text or source.default_long_text
    if settings.remote is not None:
        return long_text_policy(
            mode, settings.chunk_tokens, settings.chunk_overlap, identity.max_tokens, remote=settings.remote
        )
    model_dir = model_dir_of(settings.model)
    prefix_tokens = len(LocalTokenSpans(model_dir).spans(identity.prefix)) if identity.prefix else 0
    return long_text_policy(
        mode,
        settings.chunk_tokens,
        settings.chunk_overlap,
        identity.max_tokens,
        prefix_tokens,
        local_model_dir=model_dir,
    )


def remote_model(remote: RemoteSettings, within_s: float | None = None) -> tuple[ModelIdentity, str]:
    """The identity of a remote model (one probe request, answered within ``within_s``), its
    fallback checked against it."""
    from vectorize.providers.api import check_fallback, client_spec, remote_identity

    identity = remote_identity(remote, within_s)
    if remote.fallback is not None:
        check_fallback(identity, remote.fallback, within_s)
    return identity, f"{remote.provider}:{remote.model} at {client_spec(remote).where}"


def read_batch_metrics(run_actor: Any) -> BatchMetrics | None:
    import ray

    try:
        return ray.get(run_actor.batch_metrics.remote(), timeout=30)
    except Exception:  # the figures are lost with the actor; the run's outcome is not
        logger.warning("could not read the batch figures of the run", exc_info=True)
        return None


def start_limiters(remote: RemoteSettings) -> tuple[Any, Any]:
    """The run's shared budget actors: the primary's, and the fallback's if there is one."""
    from jobs.ray_runtime import on_driver_node
    from vectorize.shared_limiter import start_shared_limiter

    primary = start_shared_limiter(remote.rate_limits, remote.max_in_flight, **on_driver_node())
    fallback = remote.fallback
    if fallback is None:
        return primary, None
    return primary, start_shared_limiter(fallback.rate_limits, fallback.max_in_flight, **on_driver_node())


def refusal_of(limiters: tuple[Any, Any]) -> str | None:
    """Why the provider refused the run, if it has (the primary's budget knows)."""
    import ray

    try:
        return ray.get(limiters[0].report.remote(), timeout=10)[1]
    except Exception:  # a budget that cannot answer is not a refusal
        return None


def read_budgets(
    remote: RemoteSettings | None, limiters: tuple[Any, Any] | None
) -> tuple[ApiUsage | None, ProviderStopError | None]:
    """What the run's requests cost, and the provider's refusal if that is what ended the run:
    the actor that met it told the shared budget, whose answer is exact where the error's Ray
    wrapping is not."""
    if remote is None or limiters is None:
        return None, None
    import ray

    usage, stop = ApiUsage(usd_per_million=remote.usd_per_million()), None
    for actor in limiters:
        if actor is None:
            continue
        try:
            stats, stopped = ray.get(actor.report.remote(), timeout=30)
        except Exception:  # the figures are lost with the actor; the run's outcome is not
            logger.warning("could not read the request counts of the run", exc_info=True)
            continue
        usage.add(stats)
        stop = stop or (ProviderStopError(stopped) if stopped else None)
    return usage, stop


def main(argv: list[str] | None = None) -> int:
    from vectorize.cli import main as cli_main

    return cli_main(["run", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
