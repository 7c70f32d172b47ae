"""The job on a Ray cluster of a head and two worker nodes on 127.0.0.1, submitted through the
Jobs API with a working directory, as `ray job submit` does: it spreads its actors over the
nodes, and it survives losing a worker node in the middle. Then `vectorize run --address
ray://...` from a process outside the cluster."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.corpus import ROOT
from tests.helpers import query
from tests.loopback_cluster import LoopbackCluster

pytestmark = pytest.mark.slow

EMBED_ACTOR = "EmbedBatches"


@pytest.fixture(scope="module")
def cluster():
    auth_mode = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "token"  # for this process's Jobs and state API clients
    loopback = LoopbackCluster(Path(tempfile.mkdtemp(prefix="vz-cluster-")))
    try:
        loopback.start_head(num_cpus=1)
        loopback.wait_until_up()
        for worker in ("worker_a", "worker_b"):  # one at a time: nodes on one host share a session folder
            loopback.add_worker(worker, num_cpus=2)
            loopback.wait_until_up()
        yield loopback
    finally:
        loopback.stop()
        shutil.rmtree(loopback.root, ignore_errors=True)
        if auth_mode is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = auth_mode


def write_rows(path: Path, count: int) -> Path:
    with path.open("w") as out:
        for i in range(count):
            out.write(json.dumps({"id": f"row-{i:04d}", "text": f"row {i}: cluster job text number {i * 7919 % 1000}"}))
            out.write("\n")
    return path


def submit(cluster: LoopbackCluster, source: Path, table: str, model: str, dsn: str, *extra: str) -> str:
    from ray.job_submission import JobSubmissionClient

    args = [str(source), "--table", table, "--model", model, "--dsn", dsn, "--batch-size", "40"]
    args += ["--actors", "2", "--cpus-per-actor", "1", "--stall-timeout", "180", "--json", *extra]
    client = JobSubmissionClient(cluster.dashboard_url)
    return client.submit_job(
        entrypoint="python -m jobs.embed " + shlex.join(args),
        runtime_env={"working_dir": str(ROOT), "excludes": [".venv", ".git", "*.egg-info"]},
    )


def wait_for_job(cluster: LoopbackCluster, job_id: str, timeout_s: float = 300) -> tuple[str, str]:
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(cluster.dashboard_url)
    deadline = time.monotonic() + timeout_s
    while (status := client.get_job_status(job_id)) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        assert time.monotonic() < deadline, f"job {job_id} still {status}: {client.get_job_logs(job_id)[-3000:]}"
        time.sleep(1)
    return status.value, client.get_job_logs(job_id)


def summary_of(logs: str) -> dict:
    for line in reversed(logs.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise AssertionError(f"no summary in the job's output: {logs[-3000:]}")


def embed_actor_nodes(cluster: LoopbackCluster) -> list[str]:
    """The node id of each embedding actor alive now."""
    from ray.util.state import list_actors

    actors = list_actors(address=cluster.dashboard_url, filters=[("state", "=", "ALIVE")], detail=True, timeout=10)
    return [a.node_id for a in actors if EMBED_ACTOR in (a.class_name or "") and a.node_id]


def embedding_task_nodes(cluster: LoopbackCluster) -> set[str]:
    """The nodes where an embedding actor finished a batch, from the cluster's task records."""
    from ray.util.state import list_tasks

    tasks = list_tasks(
        address=cluster.dashboard_url,
        filters=[("type", "=", "ACTOR_TASK"), ("state", "=", "FINISHED")],
        detail=True,
        limit=10_000,
        timeout=10,
    )
    return {t.node_id for t in tasks if EMBED_ACTOR in (t.name or "") and t.node_id}


def assert_each_row_once(dsn: str, table: str, count: int) -> None:
    rows, ids, vectors = query(dsn, "SELECT count(*), count(DISTINCT id), count(embedding) FROM {t}", table=table)[0]
    assert (rows, ids, vectors) == (count, count, count)
    assert query(dsn, "SELECT count(*) FROM {t}", table=f"{table}_errors") == [(0,)]


def test_a_submitted_job_runs_on_more_than_one_node_and_survives_losing_one(
    cluster, tmp_path, pg_dsn, tiny_model, table_name
):
    """One job for both checks (each job here costs a minute of this 2-core machine): its
    batches are embedded on two nodes, then the worker node of one of its actors is killed."""
    count = 3000
    source = write_rows(tmp_path / "rows.jsonl", count)
    job_id = submit(cluster, source, table_name, tiny_model, pg_dsn)
    ids = cluster.node_ids()
    workers = {ids["worker_a"]: "worker_a", ids["worker_b"]: "worker_b"}
    deadline = time.monotonic() + 240
    while len(nodes := embedding_task_nodes(cluster)) < 2:
        assert time.monotonic() < deadline, f"batches were embedded on {len(nodes)} node(s) only"
        time.sleep(0.5)
    assert nodes <= set(ids.values())
    victim = next(workers[n] for n in embed_actor_nodes(cluster) if n in workers)
    stored_at_kill = query(pg_dsn, "SELECT count(*) FROM {t}", table=table_name)[0][0]
    cluster.nodes[victim].kill()

    status, logs = wait_for_job(cluster, job_id)
    assert status == "SUCCEEDED", logs[-3000:]
    assert stored_at_kill < count, "the node was killed after the job had stored every row"
    summary = summary_of(logs)
    assert (summary["rows_read"], summary["failed"]) == (count, 0)
    assert_each_row_once(pg_dsn, table_name, count)


def test_vectorize_run_through_ray_client_runs_the_job_on_the_cluster(
    cluster, tmp_path, pg_dsn, tiny_model, table_name
):
    count = 300
    source = write_rows(tmp_path / "rows.jsonl", count)
    args = ["run", str(source), "--table", table_name, "--model", tiny_model, "--dsn", pg_dsn, "--json"]
    args += ["--actors", "1", "--cpus-per-actor", "1", "--address", cluster.client_address]
    result = subprocess.run(
        [sys.executable, "-m", "vectorize.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["rows_read"], summary["embedded"], summary["failed"]) == (count, count, 0)
    assert_each_row_once(pg_dsn, table_name, count)
    history = query(pg_dsn, "SELECT status, rows_read FROM vectorize_runs WHERE run_id = %s", summary["run_id"])
    assert history == [("succeeded", count)]


def test_a_remote_run_through_ray_client_ships_its_key_and_dsn_out_of_the_dashboards_sight(
    cluster, tmp_path, pg_dsn, table_name, openai_server
):
    """The key and the DSN's password are this machine's only (the cluster's nodes have neither):
    the run works, and neither shows in what the cluster's dashboard tells of its jobs and tasks."""
    import psycopg
    from ray.job_submission import JobSubmissionClient
    from ray.util.state import list_tasks

    from tests.openai_server import vector_for

    password, key = "pw-kept-from-dashboards", "sk-only-on-the-client-4f1c"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'vz_secret'").fetchone():
            conn.execute(f"CREATE ROLE vz_secret LOGIN SUPERUSER PASSWORD '{password}'")
    dsn = pg_dsn.replace("postgresql://postgres:@", f"postgresql://vz_secret:{password}@")
    assert password in dsn
    openai_server.state.api_key = key
    count = 40
    source = write_rows(tmp_path / "rows.jsonl", count)
    args = ["run", str(source), "--table", table_name, "--provider", "openai", "--base-url", openai_server.base_url,
            "--actors", "1", "--address", cluster.client_address, "--json"]  # fmt: skip
    env = {**os.environ, "OPENAI_API_KEY": key, "VECTORIZE_DSN": dsn}
    result = subprocess.run(
        [sys.executable, "-m", "vectorize.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["embedded"], summary["failed"]) == (count, 0)
    for text, vector in query(pg_dsn, "SELECT text, embedding FROM {t}", table=table_name):
        assert abs(float(vector.to_numpy() @ vector_for(text, 1536)) - 1.0) < 1e-5

    jobs = [job.dict() for job in JobSubmissionClient(cluster.dashboard_url).list_jobs()]
    tasks = [task.__dict__ for task in list_tasks(address=cluster.dashboard_url, detail=True, limit=10_000)]
    shown = json.dumps([jobs, tasks], default=str)
    assert "_run_on_cluster" in shown  # the run's own task is among what was looked at
    assert password not in shown and key not in shown


def test_vectorize_run_without_an_address_joins_the_cluster_ray_start_started_here(
    cluster, tmp_path, pg_dsn, tiny_model, table_name
):
    """``ray start`` wrote the cluster's address in its temp folder; a run given no address joins
    it, as ``ray.init()`` does, instead of failing on the options of a Ray it would start itself."""
    from ray.job_submission import JobSubmissionClient

    jobs = JobSubmissionClient(cluster.dashboard_url)
    drivers_before = len(jobs.list_jobs())
    source = write_rows(tmp_path / "rows.jsonl", 12)
    args = ["run", str(source), "--table", table_name, "--model", tiny_model, "--dsn", pg_dsn, "--json",
            "--actors", "1", "--cpus-per-actor", "1"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = str(cluster.root)  # where this cluster's head keeps ray/ray_current_cluster
    result = subprocess.run(
        [sys.executable, "-m", "vectorize.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["embedded"] == 12
    assert len(jobs.list_jobs()) == drivers_before + 1  # the run's driver is one of the cluster's jobs
    assert_each_row_once(pg_dsn, table_name, 12)
