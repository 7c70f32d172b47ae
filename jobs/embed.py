"""The embedding job: ``python -m jobs.embed SOURCE --table T ...`` (the same arguments as
``vectorize run``), for ``ray job submit`` and for the CLI.

Everything that can be checked is checked before Ray starts: the source and its fields, the
model, the database and the collection's model identity.
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from collections import Counter
from typing import Any

from extract.records import RecordSpec
from extract.sources import SourcePlan, open_source
from jobs.sql_delta import plan_sql_reads, record_source_state, source_signature
from vectorize.chunking import LocalTokenSpans, LongTextPolicy, long_text_policy, model_dir_of
from vectorize.config import RunSettings
from vectorize.db import connect
from vectorize.embedded_pg import database_dsn
from vectorize.errors import ConfigError, ProviderStopError, VectorizeError
from vectorize.identity import ModelIdentity
from vectorize.models import model_source, read_identity
from vectorize.remote_settings import RemoteSettings
from vectorize.store.collection import Collection
from vectorize.store.registry import prepare_collection
from vectorize.store.run_lock import run_lock
from vectorize.store.runs import record_end, record_start
from vectorize.store.writer import build_vector_index, delete_ids, delete_unseen, resolve_pending
from vectorize.summary import ApiUsage, RunSummary, WriteCounts
from vectorize.text import TextTemplate

logger = logging.getLogger(__name__)


def _vectorize_cause(exc: BaseException) -> VectorizeError | None:
    """The VectorizeError inside a Ray error, if a worker raised one."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return None
        if isinstance(seen, VectorizeError):
            return seen
        seen = getattr(seen, "cause", None) or seen.__cause__
    return None


def run_job(settings: RunSettings) -> RunSummary:
    started = time.perf_counter()
    collection = Collection(settings.table)
    if settings.sync and settings.limit is not None:
        raise ConfigError("--sync leaves the collection holding exactly the source's rows: it cannot take --limit")
    source = open_source(
        settings.source, source_table=settings.source_table, query=settings.query, id_field=settings.id_field
    )
    template = TextTemplate.parse(settings.text or source.default_text)
    source.check_fields(settings.id_field, template)
    if settings.remote is None:
        identity, origin = read_identity(settings.model), model_source(settings.model)
    else:
        settings.remote = settings.remote.resolved()
        identity, origin = remote_model(settings.remote)
    long_text = _long_text_policy(settings, source, identity)
    dsn = database_dsn(settings.dsn, settings.data_dir)
    with run_lock(dsn, collection):
        prepare_collection(dsn, collection, identity, origin)
        summary = RunSummary(str(uuid.uuid4()), collection.name, source.display, identity.key)
        signature = source_signature(settings.id_field, template, long_text)
        sql_plan = plan_sql_reads(dsn, collection, source, signature, settings.sync) if source.kind == "sql" else None
        skipped = sql_plan.skipped if sql_plan else 0
        record_start(dsn, summary)
        totals, reused, orphans = WriteCounts(), 0, Counter()
        if sql_plan is None or sql_plan.skipped < sql_plan.rows:
            spec = RecordSpec(settings.id_field, template, source.flatten, source.metadata_fields)
            context = (dsn, collection, signature, long_text)
            totals, reused, orphans = _embed(settings, source, spec, identity, context, summary)
        if settings.sync:
            with connect(dsn, vector=False) as conn:
                if sql_plan is not None:
                    summary.deleted = delete_ids(conn, collection, sql_plan.gone)
                else:
                    summary.deleted = delete_unseen(conn, collection, summary.run_id)
        if sql_plan is not None and sql_plan.state is not None and settings.limit is None:
            record_source_state(dsn, collection, sql_plan.state, synced=settings.sync)
    failed_by_reason = dict(totals.failed_by_reason + orphans)
    summary.rows_read = totals.rows + skipped
    summary.embedded = totals.embedded
    summary.embedded_new = totals.embedded_new
    summary.reused = reused
    summary.unchanged = totals.unchanged + totals.refreshed + skipped
    summary.refreshed = totals.refreshed
    summary.failed = sum(failed_by_reason.values())
    summary.failed_by_reason = failed_by_reason
    summary.truncated = totals.truncated
    summary.tokens = totals.tokens
    summary.seconds = time.perf_counter() - started
    record_end(dsn, summary)
    return summary


def _embed(
    settings: RunSettings,
    source: SourcePlan,
    spec: RecordSpec,
    identity: ModelIdentity,
    context: tuple[str, Collection, str, LongTextPolicy],
    summary: RunSummary,
) -> tuple[WriteCounts, int, Counter]:
    """The Ray pipeline over the rows to read: what it wrote, what it reused, and the rows
    whose text failed under another id. ``context``: the DSN, collection, source signature and
    long-text policy."""
    dsn, collection, signature, long_text = context
    import ray

    from jobs.dedupe import TextClaims
    from jobs.pipeline import run_pipeline
    from jobs.prepare import PrepareContext
    from jobs.ray_runtime import ensure_ray, plan_actors, plan_remote_actors
    from jobs.sink import PgvectorDatasink

    started = time.perf_counter()
    ensure_ray(settings.ray_address, progress=settings.progress, worker_logs=settings.worker_logs)
    if settings.remote is None:
        plan = plan_actors(settings.actors, settings.cpus_per_actor, settings.gpus_per_actor)
    else:
        plan = plan_remote_actors(settings.actors, settings.cpus_per_actor)
    logger.info(
        "run %s: %s -> %s with %s, actors %s", summary.run_id, source.display, collection.name, identity.key, plan
    )
    claims = TextClaims.remote()
    limiters = start_limiters(settings.remote) if settings.remote else None
    sink = PgvectorDatasink(
        dsn,
        collection,
        identity.dimensions,
        identity.key,
        summary.run_id,
        sync=settings.sync and source.kind != "sql",  # a SQL source's ids are known from its fingerprints
        fail_first_write_marker=settings.fail_first_write_marker,
    )
    try:
        run_pipeline(
            source,
            settings,
            spec,
            identity,
            PrepareContext(dsn, collection, identity.key, spec, claims, signature, long_text),
            plan,
            sink,
            limiters,
        )
        summary.api_usage, _ = read_budgets(settings.remote, limiters)
        with connect(dsn) as conn:
            reused, orphans = resolve_pending(conn, collection, identity.key, summary.run_id)
            build_vector_index(conn, collection)
    except BaseException as exc:
        summary.seconds = time.perf_counter() - started
        summary.api_usage, stop = read_budgets(settings.remote, limiters)
        cause = _vectorize_cause(exc) or stop
        record_end(dsn, summary, error=(str(cause or exc) or type(exc).__name__)[:2000])
        if cause is not None and cause is not exc:
            raise cause from None
        if isinstance(exc, VectorizeError | KeyboardInterrupt):
            raise
        raise VectorizeError(
            f"the run failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    finally:
        for actor in (claims, *(limiters or ())):
            if actor is not None:
                ray.kill(actor)
    return sink.totals, reused, orphans


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


def remote_model(remote: RemoteSettings) -> tuple[ModelIdentity, str]:
    """The identity of a remote model (one probe request), its fallback checked against it."""
    from vectorize.providers.api import check_fallback, client_spec, remote_identity

    identity = remote_identity(remote)
    if remote.fallback is not None:
        check_fallback(identity, remote.fallback)
    return identity, f"{remote.provider}:{remote.model} at {client_spec(remote).where}"


def start_limiters(remote: RemoteSettings) -> tuple[Any, Any]:
    """The run's shared budget actors: the primary's, and the fallback's if there is one."""
    from vectorize.shared_limiter import start_shared_limiter

    primary = start_shared_limiter(remote.rate_limits, remote.max_in_flight)
    fallback = remote.fallback
    return primary, start_shared_limiter(fallback.rate_limits, fallback.max_in_flight) if fallback else None


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
