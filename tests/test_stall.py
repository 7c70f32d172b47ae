"""A run that cannot make progress stops after --stall-timeout with a message that says why."""

from __future__ import annotations

import time

import pytest
import ray

from jobs.launch import run_job
from jobs.progress import StallWatch
from tests.corpus import write_jsonl
from tests.helpers import query, run
from tests.openai_server import Fault
from vectorize.errors import StallError
from vectorize.gpu_batch import MAX_BATCH, MIN_BATCH, batch_for_memory
from vectorize.remote_settings import RemoteSettings
from vectorize.secret import Secret
from vectorize.settings import RunSettings


def test_a_pool_that_can_never_start_fails_after_the_stall_timeout(tmp_path, tiny_model, pg_dsn, table_name):
    source = write_jsonl(tmp_path / "rows.jsonl", [{"id": str(i), "text": f"row {i}"} for i in range(20)])
    started = time.monotonic()
    with pytest.raises(StallError) as stalled:
        run(source, table_name, tiny_model, pg_dsn, gpus_per_actor=1.0, stall_timeout_s=3)
    assert time.monotonic() - started < 60
    message = str(stalled.value)
    assert "no progress for" in message and "--stall-timeout 3" in message
    assert "need 1 GPU each and the cluster has 0" in message
    history = query(pg_dsn, "SELECT error FROM vectorize_runs WHERE collection = %s", table_name)
    assert len(history) == 1 and "no progress" in history[0][0]
    deadline = time.monotonic() + 30  # and nothing of the stopped run keeps holding the CPUs
    while (free := ray.available_resources().get("CPU", 0)) < ray.cluster_resources()["CPU"]:
        assert time.monotonic() < deadline, f"the stopped run still holds CPUs: {free} free"
        time.sleep(0.5)


def _slow_remote_run(tmp_path, server, pg_dsn, table_name, stall_timeout_s: float) -> None:
    """96 rows in three requests, one after another, each answered after the server's latency."""
    source = write_jsonl(tmp_path / "rows.jsonl", [{"id": str(i), "text": f"row {i}"} for i in range(96)])
    remote = RemoteSettings(base_url=server.base_url, api_key=Secret(server.state.api_key), timeout_s=30.0,
                            max_in_flight=1)  # fmt: skip
    run_job(RunSettings.of(source=str(source), table=table_name, dsn=pg_dsn, remote=remote, batch_size=32,
                           actors=(1, 1), stall_timeout_s=stall_timeout_s))  # fmt: skip


def test_the_runs_start_outlasts_a_short_stall_timeout_and_a_stall_after_it_does_not(
    tmp_path, pg_dsn, table_name, openai_server, ray_cluster
):
    openai_server.state.latency_s = 4.0  # the first answer comes past the stall timeout, as each later one
    with pytest.raises(StallError) as stalled:
        _slow_remote_run(tmp_path, openai_server, pg_dsn, table_name, stall_timeout_s=2)
    message = str(stalled.value)
    assert "--stall-timeout 2)" in message and "rows written" in message, message
    assert f"the embedding service at {openai_server.base_url} does not" in message
    written = query(pg_dsn, "SELECT count(*) FROM {t}", table=table_name)[0][0]
    assert 32 <= written < 96  # the first batch, answered after the start's wait, is stored


def test_a_run_that_never_writes_a_row_stops_once_its_start_is_over(
    tmp_path, pg_dsn, table_name, openai_server, ray_cluster, monkeypatch
):
    monkeypatch.setattr(StallWatch, "START_S", 3.0)
    openai_server.state.hang_s = 8.0  # the rows' requests wait, not the provider's first one
    openai_server.state.faults.append(Fault("timeout", times=-1, match="row"))
    with pytest.raises(StallError) as stalled:
        _slow_remote_run(tmp_path, openai_server, pg_dsn, table_name, stall_timeout_s=1)
    assert len(openai_server.state.answered) == 1  # stopped before any row was answered: the probe only
    message = str(stalled.value)
    assert "(--stall-timeout 1, 3 s to start); so far: no rows finished" in message, message


@pytest.mark.parametrize(
    ("free_bytes", "bytes_per_text", "expected"),
    [
        (20 * 2**30, 1.5 * 2**20, MAX_BATCH),  # a 24 GiB card and a small model: the cap
        (20 * 2**30, 40 * 2**20, 256),  # 12 GiB usable / 40 MiB = 307 -> 256
        (2 * 2**30, 40 * 2**20, 16),  # 1.2 GiB / 40 MiB = 30 -> 16
        (2**28, 40 * 2**20, MIN_BATCH),  # not even the floor fits: the floor, and the OOM says so
    ],
)
def test_gpu_batch_is_the_largest_power_of_two_that_fits(free_bytes, bytes_per_text, expected):
    assert batch_for_memory(free_bytes, bytes_per_text) == expected
