"""``vectorize run --address ray://HEAD:10001``: the run's driver as a task on the cluster's head.

Ray Data executes a pipeline from a process with a core worker, which a Ray Client driver has
not; so this process connects as a client, ships the working directory (as ``ray job submit
--working-dir .`` does, so relative source paths mean the same), and runs the whole job in one
task on the head node, the node that lives as long as the cluster does. The task takes no CPU;
its summary, or its error, comes back here. Ctrl-C here cancels it: the run records that it was
interrupted, and the same command finishes the rest.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import replace

from vectorize.embedded_pg import given_dsn
from vectorize.errors import ConfigError, VectorizeError
from vectorize.settings import RunSettings
from vectorize.summary import RunSummary

logger = logging.getLogger(__name__)

HEAD_NODE_RESOURCE = "node:__internal_head__"  # every Ray head node has it
UPLOAD_EXCLUDES = [".venv", ".git", "*.egg-info", "__pycache__"]
CANCEL_GRACE_S = 60


def _run_on_cluster(settings: RunSettings) -> RunSummary:
    from jobs.runner import run_here

    return run_here(settings)


def run_through_client(settings: RunSettings, address: str) -> RunSummary:
    if given_dsn(settings.target.dsn) is None:
        raise ConfigError(
            f"a run through {address} writes from the cluster, which cannot reach this machine's embedded "
            "Postgres: pass --dsn (or set VECTORIZE_DSN) to a Postgres with pgvector the cluster can reach"
        )
    import ray

    from vectorize.errors import vectorize_cause

    env_vars = {"VECTORIZE_DSN": os.environ["VECTORIZE_DSN"]} if os.environ.get("VECTORIZE_DSN") else {}
    logging.getLogger("ray").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():  # Ray's own warning says what the error below says
            warnings.simplefilter("ignore")
            ray.init(
                address,
                runtime_env={"working_dir": os.getcwd(), "excludes": UPLOAD_EXCLUDES, "env_vars": env_vars},
                logging_level=logging.ERROR,
                log_to_driver=settings.runtime.worker_logs,  # as a local run: workers' output only with --debug
            )
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise ConfigError(
            f"cannot connect to the Ray cluster at {address} ({exc}): is its Ray Client port "
            "(10001 unless set) open to this machine?"
        ) from None
    task = ray.remote(_run_on_cluster).options(num_cpus=0, resources={HEAD_NODE_RESOURCE: 0.001}, max_retries=0)
    ref = task.remote(replace(settings, runtime=replace(settings.runtime, ray_address=None)))
    try:
        try:
            return ray.get(ref)
        except KeyboardInterrupt:
            ray.cancel(ref)
            try:
                ray.get(ref, timeout=CANCEL_GRACE_S)
            except Exception:  # the cancelled run's own error; it is recorded in the run history
                pass
            raise
        except ray.exceptions.RayError as exc:
            cause = vectorize_cause(exc)
            if cause is not None:
                raise cause from None
            raise VectorizeError(f"the run failed on the cluster: {str(exc).strip().splitlines()[-1]}") from None
    finally:
        ray.shutdown()
