"""Starting or joining Ray with a small footprint."""

from __future__ import annotations

import logging
import os
import warnings

from vectorize.console import stderr_is_terminal

logger = logging.getLogger(__name__)

BLOCK_BYTES = 16 << 20

# Ray's own processes take CPU from the model on a small machine: no dashboard, no usage
# stats, no metrics export unless asked for, and Ray Data's progress bars only on a terminal.
_QUIET_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "1",
}

# A Ray started here keeps its idle worker processes for a while instead of ending all but one
# per CPU after a second: a process that runs one job after another (a notebook, a scheduler, the
# test suite) then hands each run's actors and light tasks a started worker, where Ray would start
# a new Python process for each.
KEPT_WORKERS = {"num_workers_soft_limit": 16, "idle_worker_killing_time_threshold_ms": 300_000}


def ensure_ray(address: str | None = None, *, progress: bool = False, worker_logs: bool = False) -> None:
    """Join ``address`` (or $RAY_ADDRESS) or start a local Ray. Workers' own output stays in
    Ray's log files unless ``worker_logs``; their errors still reach the driver as exceptions."""
    import ray

    if not ray.is_initialized():
        for key, value in _QUIET_ENV.items():
            os.environ.setdefault(key, value)
        address = address or os.environ.get("RAY_ADDRESS") or None
        logging.getLogger("ray").setLevel(logging.ERROR)
        kwargs: dict = {"logging_level": logging.ERROR, "log_to_driver": worker_logs}
        if address is None:
            kwargs.update(include_dashboard=False)
            if starts_a_local_ray():  # Ray refuses a system config from a process joining a cluster
                kwargs.update(_system_config=KEPT_WORKERS)
        ray.init(address=address, **kwargs)
    from ray.data import DataContext

    # A failed task's traceback is Ray Data's to log at ERROR; the run's own error says it in one line
    # (--debug shows both).
    terminal = progress and stderr_is_terminal()
    data_logger = logging.getLogger("ray.data")
    data_logger.setLevel(logging.INFO if terminal or worker_logs else logging.CRITICAL)
    if not worker_logs:  # a filter on the handlers: one on the logger misses its children's records
        for handler in data_logger.handlers:
            if _below_error not in handler.filters:
                handler.addFilter(_below_error)

    ctx = DataContext.get_current()
    # Ray Data joins a stage's outputs into blocks up to this size: at its default (128 MiB) one
    # block of vectors is tens of thousands of rows, held whole by the stage after it
    ctx.target_max_block_size = BLOCK_BYTES
    ctx.enable_progress_bars = terminal
    ctx.print_on_execution_start = False
    ctx.verbose_stats_logs = False
    warnings.filterwarnings("ignore", message="The maximum number of concurrent tasks", category=UserWarning)


def starts_a_local_ray() -> bool:
    """Whether ``ray.init()`` without an address starts a Ray here: it joins the one that
    ``ray start`` started on this machine, if there is one."""
    from ray._private.services import canonicalize_bootstrap_address

    return canonicalize_bootstrap_address(None) is None


def _below_error(record: logging.LogRecord) -> bool:
    return record.levelno < logging.ERROR


def check_embedded_database_reach() -> None:
    """The embedded Postgres listens on a socket of this machine only: a cluster whose nodes
    are other machines needs a server they can all reach."""
    import ray

    from vectorize.errors import DatabaseConfigError

    here = ray.util.get_node_ip_address()
    elsewhere = sorted({n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]} - {here})
    if elsewhere:
        raise DatabaseConfigError(
            f"the embedded Postgres of this machine cannot be reached from the cluster's other nodes "
            f"({', '.join(elsewhere[:3])}{', ...' if len(elsewhere) > 3 else ''}): "
            "pass --dsn (or set VECTORIZE_DSN) to a Postgres with pgvector that every node can reach"
        )


def on_driver_node() -> dict:
    """Options that keep a run's bookkeeping actors (claims and progress, budgets) on the
    driver's node: that node lives as long as the run does, where a worker node may not."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node_id = ray.get_runtime_context().get_node_id()
    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)}
