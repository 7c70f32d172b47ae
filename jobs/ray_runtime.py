"""Starting or joining Ray with a small footprint, and sizing the embedding actors."""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass

logger = logging.getLogger(__name__)

# Ray's own processes take CPU from the model on a small machine: no dashboard, no usage
# stats, no metrics export unless asked for, and Ray Data's progress bars only on a terminal.
_QUIET_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "1",
}


def ensure_ray(address: str | None = None, *, progress: bool = False) -> None:
    import ray

    if not ray.is_initialized():
        for key, value in _QUIET_ENV.items():
            os.environ.setdefault(key, value)
        address = address or os.environ.get("RAY_ADDRESS") or None
        kwargs: dict = {"logging_level": logging.WARNING, "log_to_driver": True}
        if address is None:
            kwargs.update(include_dashboard=False)
        ray.init(address=address, **kwargs)
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = progress and sys.stderr.isatty()
    ctx.print_on_execution_start = False
    ctx.verbose_stats_logs = False


@dataclass(frozen=True)
class ActorPlan:
    min_actors: int
    max_actors: int
    cpus_per_actor: float
    gpus_per_actor: float
    torch_threads: int | None


# CPU left for the light stages (reading, preparing, writing) beside the model's actors.
LIGHT_STAGE_CPUS = 0.25


def plan_actors(
    actors: tuple[int, int] | None, cpus_per_actor: float | None, gpus_per_actor: float | None
) -> ActorPlan:
    """One actor per GPU in fp16 when the cluster has GPUs; otherwise CPU actors whose torch
    threads match the cores each one owns, leaving a little CPU for the light stages."""
    import ray

    resources = ray.cluster_resources()
    cpus = float(resources.get("CPU", 1))
    gpus = float(resources.get("GPU", 0))
    if gpus_per_actor is None:
        gpus_per_actor = 1.0 if gpus >= 1 else 0.0
    if gpus_per_actor > 0:
        count = max(1, int(gpus // gpus_per_actor))
        low, high = actors or (1, count)
        return ActorPlan(low, high, cpus_per_actor or 1.0, gpus_per_actor, None)
    if actors is None:
        count = max(1, int(cpus // 4))
        actors = (1, count)
    low, high = actors
    if cpus_per_actor is None:
        cpus_per_actor = max(1.0, (cpus - 2 * LIGHT_STAGE_CPUS) / high)
    threads = max(1, math.ceil(cpus_per_actor))
    return ActorPlan(low, high, cpus_per_actor, 0.0, threads)
