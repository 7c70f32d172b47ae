"""A run that cannot make progress stops after --stall-timeout with a message that says why."""

from __future__ import annotations

import time

import pytest
import ray

from tests.corpus import write_jsonl
from tests.helpers import query, run
from vectorize.errors import StallError
from vectorize.gpu_batch import MAX_BATCH, MIN_BATCH, batch_for_memory


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
