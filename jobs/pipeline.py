"""The Ray Data pipeline: read → prepare and skip known → embed on an actor pool → pgvector."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import ray.data
from ray.data.datasource import Datasink

from extract.sources import SourcePlan
from jobs.batch_events import RunContext
from jobs.embedder import EmbedBatches
from vectorize import rows
from vectorize.providers.base import ActorPlan, ProviderSpec, is_deferred
from vectorize.settings import RunSettings

logger = logging.getLogger(__name__)

# The light stages (reading, preparing, writing) each ask for a quarter CPU.
LIGHT_STAGE_CPUS = 0.25


def run_pipeline(
    source: SourcePlan,
    settings: RunSettings,
    prepare: tuple[Callable[..., pa.Table], Any],
    spec: ProviderSpec,
    plan: ActorPlan,
    sink: Datasink,
    run: RunContext,
    budgets: object = None,
) -> None:
    """``prepare``: the preparation function and its context; ``spec``: the provider the
    embedding actors open, with ``budgets`` (its shared budget actors, if it has any);
    ``run``: the run the embedding actors tell of their batches."""
    dataset = prepared_rows(source, settings, prepare)
    if is_deferred(spec):
        dataset = dataset.map_batches(defer_embedding, batch_format="pyarrow", num_cpus=LIGHT_STAGE_CPUS)
    else:
        dataset = _embedded(dataset, settings, spec, plan, run, budgets)
    dataset.write_datasink(
        sink,
        ray_remote_args={"num_cpus": LIGHT_STAGE_CPUS, "max_retries": 3},
        concurrency=settings.runtime.writers,
    )


def prepared_rows(
    source: SourcePlan, settings: RunSettings, prepare: tuple[Callable[..., pa.Table], Any]
) -> ray.data.Dataset:
    """The source's rows read and prepared (``prepare``: the function and its context)."""
    dataset = source.read(num_cpus=LIGHT_STAGE_CPUS)
    if settings.source.limit is not None:
        dataset = dataset.limit(settings.source.limit)
    return dataset.map_batches(
        prepare[0],
        batch_format="pyarrow",
        fn_kwargs={"ctx": prepare[1]},
        num_cpus=LIGHT_STAGE_CPUS,
    )


def defer_embedding(batch: pa.Table) -> pa.Table:
    """Rows to embed wait in the pending table, as rows reusing a vector do: the run's end gives
    them theirs (``jobs.batch_phase``)."""
    status = pc.if_else(pc.equal(batch.column("status"), rows.EMBED), rows.REUSE, batch.column("status"))
    return batch.set_column(batch.schema.get_field_index("status"), "status", status)


def _embedded(
    dataset: ray.data.Dataset, settings: RunSettings, spec: ProviderSpec, plan: ActorPlan, run: RunContext, budgets
) -> ray.data.Dataset:
    in_flight = {"max_tasks_in_flight_per_actor": plan.batches_in_flight} if plan.batches_in_flight > 1 else {}
    return dataset.map_batches(
        EmbedBatches,
        batch_format="pyarrow",
        batch_size=settings.embedding.batch_size or plan.batch_rows or spec.default_batch_rows,
        compute=ray.data.ActorPoolStrategy(min_size=plan.min_actors, max_size=plan.max_actors, **in_flight),
        fn_constructor_kwargs={"spec": spec, "plan": plan, "budgets": budgets, "run": run},
        num_cpus=plan.cpus_per_actor,
        num_gpus=plan.gpus_per_actor or None,
    )
