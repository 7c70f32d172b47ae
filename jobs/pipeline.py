"""The Ray Data pipeline: read → prepare and skip known → embed on an actor pool → pgvector."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import ray.data
from ray.data.datasource import Datasink

from extract.sources import SourcePlan
from jobs.batch_events import RunContext
from jobs.embedder import EmbedBatches
from jobs.ray_runtime import LIGHT_STAGE_CPUS, ActorPlan
from jobs.remote_embedder import EmbedRemoteBatches
from vectorize.config import RunSettings
from vectorize.identity import ModelIdentity

logger = logging.getLogger(__name__)


def run_pipeline(
    source: SourcePlan,
    settings: RunSettings,
    prepare: tuple[Callable[..., pa.Table], Any],
    identity: ModelIdentity,
    plan: ActorPlan,
    sink: Datasink,
    run: RunContext,
    limiters: tuple[Any, Any] | None = None,
) -> None:
    """``prepare``: the preparation function and its context; ``run``: the run the embedding
    actors tell of their batches; ``limiters``: handles to the shared budget actors (primary,
    fallback) of a remote provider."""
    dataset = source.read(num_cpus=LIGHT_STAGE_CPUS)
    if settings.limit is not None:
        dataset = dataset.limit(settings.limit)
    dataset = dataset.map_batches(
        prepare[0],
        batch_format="pyarrow",
        fn_kwargs={"ctx": prepare[1]},
        num_cpus=LIGHT_STAGE_CPUS,
    )
    if settings.remote is None:
        dataset = dataset.map_batches(
            EmbedBatches,
            batch_format="pyarrow",
            batch_size=settings.batch_size,
            compute=ray.data.ActorPoolStrategy(min_size=plan.min_actors, max_size=plan.max_actors),
            fn_constructor_kwargs={
                "identity": identity,
                "model_spec": settings.model,
                "cpu_threads": plan.torch_threads,
                "encode_batch_size": settings.encode_batch_size,
                "run": run,
            },
            num_cpus=plan.cpus_per_actor,
            num_gpus=plan.gpus_per_actor or None,
        )
    else:
        assert limiters is not None
        dataset = dataset.map_batches(
            EmbedRemoteBatches,
            batch_format="pyarrow",
            batch_size=settings.batch_size,
            compute=ray.data.ActorPoolStrategy(
                min_size=plan.min_actors, max_size=plan.max_actors, max_tasks_in_flight_per_actor=4
            ),
            fn_constructor_kwargs={
                "identity": identity,
                "settings": settings.remote,
                "limiter": limiters[0],
                "fallback_limiter": limiters[1],
                "run": run,
            },
            num_cpus=plan.cpus_per_actor,
        )
    dataset.write_datasink(
        sink,
        ray_remote_args={"num_cpus": LIGHT_STAGE_CPUS, "max_retries": 3},
        concurrency=settings.writers,
    )
