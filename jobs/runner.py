"""One run of a plan, on the Ray this process is attached to: the run's lock, its target
readied, the pipeline with its bookkeeping actor, budgets, stall watch and live figures, the
failure turned into the run's one error, and everything torn down."""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from typing import Any

import psycopg

from jobs.database_watch import DatabaseWatch
from jobs.live_figures import export_run_totals
from jobs.plan import RunPlan, plan_run
from jobs.targets import TargetRun
from vectorize.db import connect, lost_database
from vectorize.errors import StoreError, VectorizeError, vectorize_cause, worker_error
from vectorize.providers.base import ActorRequest, is_deferred
from vectorize.settings import RunSettings
from vectorize.store.run_lock import run_lock
from vectorize.store.runs import mark_abandoned, plain_error, record_end, record_failure, record_start
from vectorize.summary import ApiUsage, BatchApiFigures, BatchMetrics, RunSummary, WriteCounts

logger = logging.getLogger(__name__)


def run_here(settings: RunSettings, plan: RunPlan | None = None) -> RunSummary:
    """The run, its driver in this process: planned (checked) first, unless ``plan`` is given,
    then executed."""
    started = time.perf_counter()
    return execute(plan or plan_run(settings), started)


def execute(plan: RunPlan, started: float | None = None) -> RunSummary:
    """``started``: when the run's clock started (its planning included), else now."""
    started = started if started is not None else time.perf_counter()
    target, inputs = plan.target, plan.inputs
    with DatabaseWatch(target.dsn, plan.settings.runtime.stall_timeout_s), run_lock(target.dsn, target.name) as store:
        summary = RunSummary(str(uuid.uuid4()), target.name, inputs.source.display, inputs.identity.key)
        job = target.begin(store, inputs, summary)
        mark_abandoned(store, target.name)
        record_start(store, summary)
        totals, reused, orphans = WriteCounts(), 0, Counter()
        if job.needs_pipeline:
            totals, (reused, orphans) = _embed(plan, job, summary)
        else:
            _no_requests(plan, summary)
        _tally(summary, totals, reused, orphans, job)
        job.end(store, summary)
        return _finished(store, summary, started)


def _no_requests(plan: RunPlan, summary: RunSummary) -> None:
    """A run that reads nothing still tells what it asked of a remote model: nothing."""
    remote = plan.settings.embedding.remote
    if remote is None:
        return
    summary.api_usage = ApiUsage(usd_per_million=remote.usd_per_million())
    if remote.batch is not None:
        summary.batch_api = BatchApiFigures(usd_per_million=remote.batch_usd_per_million(),
                                            sync_usd_per_million=remote.usd_per_million())  # fmt: skip


def _tally(summary: RunSummary, totals: WriteCounts, reused: int, orphans: Counter, job: TargetRun) -> None:
    """The run's figures: what the sink wrote, what the end step gave, and the rows not read."""
    failed_by_reason = dict(totals.failed_by_reason + orphans + job.skipped_failures)
    summary.rows_read = totals.rows + job.skipped + job.skipped_failures.total()
    summary.embedded = totals.embedded
    summary.embedded_new = totals.embedded_new
    summary.reused = reused
    summary.unchanged = totals.unchanged + totals.refreshed + job.skipped
    summary.refreshed = totals.refreshed
    summary.failed = sum(failed_by_reason.values())
    summary.failed_by_reason = failed_by_reason
    summary.truncated = totals.truncated
    summary.sanitized = totals.sanitized
    summary.tokens = totals.tokens


def _finished(store: psycopg.Connection, summary: RunSummary, started: float) -> RunSummary:
    summary.seconds = time.perf_counter() - started
    record_end(store, summary)
    export_run_totals(summary, "succeeded")
    return summary


def _embed(plan: RunPlan, job: TargetRun, summary: RunSummary) -> tuple[WriteCounts, tuple[int, Counter]]:
    """The Ray pipeline over the rows to read, then the target's end-of-pipeline step; what the
    sink wrote and what that step gave."""
    import ray

    from jobs.batch_events import RunContext
    from jobs.live_figures import LiveFigures
    from jobs.pipeline import run_pipeline
    from jobs.progress import StallWatch, missing_resources, waiting_for
    from jobs.run_actor import RunActor
    from vectorize.ray_runtime import check_embedded_database_reach, ensure_ray, on_driver_node

    runtime, provider, dsn = plan.settings.runtime, plan.provider, plan.target.dsn
    started = time.perf_counter()
    ensure_ray(runtime.ray_address, progress=runtime.progress, worker_logs=runtime.worker_logs)
    if plan.target.embedded_database:
        check_embedded_database_reach()
    asked = ActorRequest(runtime.actors, runtime.cpus_per_actor, runtime.gpus_per_actor)
    actors = provider.plan_actors(ray.cluster_resources(), asked)
    logger.info(
        "run %s: %s -> %s with %s, actors %s",
        summary.run_id, job.source.display, summary.collection, provider.identity.key, actors,
    )  # fmt: skip
    run_actor = RunActor.options(**on_driver_node()).remote()
    budgets = provider.start_budgets(on_driver_node())
    prepare_fn, prepare_ctx, sink = job.stage(summary, run_actor)
    refusal = budgets.refusal if budgets is not None else None
    called = None if is_deferred(provider) else provider.service  # a deferred provider is called after the pipeline
    watch = StallWatch(run_actor, runtime.stall_timeout_s, lambda: waiting_for(actors, dsn, called), refusal,
                       missing=lambda: missing_resources(actors))  # fmt: skip
    run = RunContext(summary.run_id, summary.collection, run_actor, open_early=job.surely_embeds)
    try:
        with watch, LiveFigures(dsn, summary, run_actor):
            run_pipeline(job.source, plan.settings, (prepare_fn, prepare_ctx), provider, actors, sink, run, budgets)
        summary.batch_metrics = read_batch_metrics(run_actor)
        summary.api_usage, stop = budgets.usage() if budgets is not None else (None, None)
        if stop is not None:  # refused while the last batches went: what was answered is written
            raise stop
        with connect(dsn) as conn:
            if is_deferred(provider):
                sink.totals.add(job.embed_deferred(conn, summary, provider, progress=runtime.progress))
            finished = job.finish(conn, summary)
    except BaseException as exc:
        exc = watch.check(exc)
        summary.seconds = time.perf_counter() - started
        summary.batch_metrics = read_batch_metrics(run_actor)
        summary.api_usage, stop = budgets.usage() if budgets is not None else (None, None)
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
        ray.kill(run_actor)
        if budgets is not None:
            budgets.end()
        watch.disarm()
    return sink.totals, finished


def read_batch_metrics(run_actor: Any) -> BatchMetrics | None:
    import ray

    try:
        return ray.get(run_actor.batch_metrics.remote(), timeout=30)
    except Exception:  # the figures are lost with the actor; the run's outcome is not
        logger.warning("could not read the batch figures of the run", exc_info=True)
        return None
