"""A run killed halfway and started again finishes the rest, each row exactly once."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.corpus import ROOT, write_jsonl
from tests.helpers import kill_once_stored, query, run

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_cluster")]


def test_killed_run_resumes_without_duplicates(tmp_path, tiny_model, pg_dsn, table_name, ray_cluster):
    total = 1500  # enough that the run is still writing when the test kills it
    rows = [{"id": f"k{i}", "text": f"resumable row {i} " + "padding words " * (i % 13)} for i in range(total)]
    source = write_jsonl(tmp_path / "kill.jsonl", rows)
    address = ray_cluster.get_runtime_context().gcs_address
    driver = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jobs.embed",
            str(source),
            "--table",
            table_name,
            "--model",
            tiny_model,
            "--dsn",
            pg_dsn,
            "--batch-size",
            "8",
            "--writers",
            "1",
            "--address",
            address,
            "--json",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    stored_when_killed = kill_once_stored(driver, pg_dsn, f'"{table_name}"')
    assert 0 < stored_when_killed < total, (stored_when_killed, driver.stderr.read()[-2000:])

    resumed = run(source, table_name, tiny_model, pg_dsn)
    assert resumed.unchanged >= stored_when_killed
    assert resumed.embedded + resumed.unchanged == total
    assert resumed.failed == 0
    counts = query(pg_dsn, "SELECT count(*), count(DISTINCT id) FROM {t}", table=table_name)[0]
    assert counts == (total, total)
    history = query(pg_dsn, "SELECT status FROM vectorize_runs WHERE collection = %s ORDER BY started_at", table_name)
    assert history == [("abandoned",), ("succeeded",)]  # the killed driver's run is not 'running' forever
    assert query(pg_dsn, "SELECT count(*) FROM {t}", table=f"{table_name}_pending") == [(0,)]
