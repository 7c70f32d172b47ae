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
from dataclasses import dataclass, replace

from extract.sql_source import SQL_PREFIXES
from vectorize.embedded_pg import given_dsn
from vectorize.errors import ConfigError, VectorizeError
from vectorize.remote_settings import RemoteSettings
from vectorize.secret import Secret
from vectorize.settings import RunSettings
from vectorize.summary import RunSummary

logger = logging.getLogger(__name__)

HEAD_NODE_RESOURCE = "node:__internal_head__"  # every Ray head node has it
UPLOAD_EXCLUDES = [".venv", ".git", "*.egg-info", "__pycache__"]
CANCEL_GRACE_S = 60


@dataclass(frozen=True)
class _Secrets:
    """What the run needs that must not show in the cluster's dashboard: the DSNs (they may hold
    a password: the collection's, a Postgres source's) and the API keys, as this machine has
    them. They travel in Ray's object store, the task's arguments holding only a reference to
    them, and the runtime env none of them."""

    dsn: Secret | None
    source: Secret | None  # a Postgres source's DSN
    api_key: Secret | None
    fallback_key: Secret | None


def _client_key(remote: RemoteSettings) -> Secret | None:
    """The key this machine has (its option or its environment); None: the cluster's own."""
    try:
        return remote.key()
    except ConfigError:
        return None


def _split_secrets(settings: RunSettings) -> tuple[RunSettings, _Secrets]:
    remote, source = settings.embedding.remote, settings.source
    dsn = given_dsn(settings.target.dsn)
    sql_source = source.source if source.source.startswith(SQL_PREFIXES) else None
    secrets = _Secrets(
        Secret(dsn) if dsn else None,
        Secret(sql_source) if sql_source else None,
        _client_key(remote) if remote else None,
        _client_key(remote.fallback) if remote and remote.fallback else None,
    )
    if remote is not None:
        fallback = replace(remote.fallback, api_key=None) if remote.fallback else None
        remote = replace(remote, api_key=None, fallback=fallback)
    return replace(
        settings,
        source=replace(source, source="postgresql://") if sql_source else source,
        target=replace(settings.target, dsn=None),
        embedding=replace(settings.embedding, remote=remote),
        runtime=replace(settings.runtime, ray_address=None),
    ), secrets


def _join_secrets(settings: RunSettings, secrets: _Secrets) -> RunSettings:
    remote, source = settings.embedding.remote, settings.source
    if remote is not None:
        fallback = replace(remote.fallback, api_key=secrets.fallback_key) if remote.fallback else None
        remote = replace(remote, api_key=secrets.api_key, fallback=fallback)
    return replace(
        settings,
        source=replace(source, source=secrets.source.reveal()) if secrets.source else source,
        target=replace(settings.target, dsn=secrets.dsn.reveal() if secrets.dsn else None),
        embedding=replace(settings.embedding, remote=remote),
    )


def _run_on_cluster(settings: RunSettings, secrets: list) -> RunSummary:
    """``secrets``: the reference to the run's ``_Secrets``, in a list so that Ray hands the task
    the reference, not the value it names."""
    import ray

    from jobs.driver import drive_here

    return drive_here(_join_secrets(settings, ray.get(secrets[0])))


def run_through_client(settings: RunSettings, address: str) -> RunSummary:
    if given_dsn(settings.target.dsn) is None:
        raise ConfigError(
            f"a run through {address} writes from the cluster, which cannot reach this machine's embedded "
            "Postgres: pass --dsn (or set VECTORIZE_DSN) to a Postgres with pgvector the cluster can reach"
        )
    import ray

    from vectorize.errors import vectorize_cause

    settings, secrets = _split_secrets(settings)
    logging.getLogger("ray").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():  # Ray's own warning says what the error below says
            warnings.simplefilter("ignore")
            ray.init(
                address,
                runtime_env={"working_dir": os.getcwd(), "excludes": UPLOAD_EXCLUDES},
                logging_level=logging.ERROR,
                log_to_driver=settings.runtime.worker_logs,  # as a local run: workers' output only with --debug
            )
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise ConfigError(
            f"cannot connect to the Ray cluster at {address} ({exc}): is its Ray Client port "
            "(10001 unless set) open to this machine?"
        ) from None
    task = ray.remote(_run_on_cluster).options(num_cpus=0, resources={HEAD_NODE_RESOURCE: 0.001}, max_retries=0)
    ref = task.remote(settings, [ray.put(secrets)])
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
