"""The test's own Postgres killed or frozen under a run: one line, a bounded wait, and a rerun
that finishes exactly. Only the server this test started is touched, by its PIDs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from tests.corpus import ROOT, write_jsonl
from tests.helpers import query, run
from tests.own_postgres import kill_server, postmaster_pid, restart_server, send_signal, server_pids

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_cluster")]
TOTAL = 400


def _stored(dsn: str, table: str) -> int:
    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is None:
                return 0
            return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    except psycopg.Error:
        return 0


def _start_run(source: Path, table: str, model: str, dsn: str, address: str, *extra: str) -> subprocess.Popen:
    args = ["run", str(source), "--table", table, "--model", model, "--dsn", dsn, "--batch-size", "8"]
    args += ["--writers", "1", "--actors", "1", "--address", address, *extra]
    return subprocess.Popen(
        [sys.executable, "-m", "vectorize.cli", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip


def _when_rows_stored(driver: subprocess.Popen, dsn: str, table: str) -> None:
    deadline = time.monotonic() + 240
    while _stored(dsn, table) < 16:
        assert driver.poll() is None, driver.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "the run stored nothing in 240 s"
        time.sleep(0.2)


def _finish(driver: subprocess.Popen, limit_s: float) -> tuple[int, list[str], float]:
    started = time.monotonic()
    try:
        _, err = driver.communicate(timeout=limit_s)
    except subprocess.TimeoutExpired:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.communicate()
        pytest.fail(f"the run did not end within {limit_s} s")
    return driver.returncode, err.strip().splitlines(), time.monotonic() - started


def _rows(tmp_path: Path) -> Path:
    rows = [{"id": f"f{i}", "text": f"fault row {i} " + "words " * (i % 11)} for i in range(TOTAL)]
    return write_jsonl(tmp_path / "rows.jsonl", rows)


def test_database_killed_mid_run_is_one_line_and_the_rerun_is_exact(
    tmp_path, own_postgres, tiny_model, table_name, ray_cluster
):
    dsn = own_postgres.get_uri()
    source = _rows(tmp_path)
    driver = _start_run(source, table_name, tiny_model, dsn, ray_cluster.get_runtime_context().gcs_address)
    _when_rows_stored(driver, dsn, table_name)
    server = server_pids(postmaster_pid(tmp_path / "pgdata"))
    os.kill(server[0], signal.SIGKILL)
    code, lines, _ = _finish(driver, 120)
    assert code == 3, lines
    assert len(lines) == 1 and lines[0].startswith("vectorize: error: lost the database"), lines
    assert "run the same command" in lines[0]

    restarted = restart_server(tmp_path / "pgdata", server)
    assert restarted.get_uri() == dsn
    resumed = run(source, table_name, tiny_model, dsn)
    assert resumed.embedded + resumed.unchanged == TOTAL and resumed.failed == 0
    assert query(dsn, "SELECT count(*), count(DISTINCT id) FROM {t}", table=table_name)[0] == (TOTAL, TOTAL)
    statuses = [s for (s,) in query(dsn, "SELECT status FROM vectorize_runs ORDER BY started_at")]
    assert statuses == ["abandoned", "succeeded"]  # the killed run could not record its end


def test_database_frozen_mid_run_ends_within_the_stall_timeout_and_grace(
    tmp_path, own_postgres, tiny_model, table_name, ray_cluster
):
    dsn = own_postgres.get_uri()
    source = _rows(tmp_path)
    stall_s = 15
    address = ray_cluster.get_runtime_context().gcs_address
    driver = _start_run(source, table_name, tiny_model, dsn, address, "--stall-timeout", str(stall_s))
    _when_rows_stored(driver, dsn, table_name)
    frozen = server_pids(postmaster_pid(tmp_path / "pgdata"))
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        code, lines, waited = _finish(driver, stall_s + 45 + 45)
    finally:
        for pid in frozen:
            send_signal(pid, signal.SIGCONT)
    assert code == 3, lines
    assert len(lines) == 1 and "database" in lines[0], lines
    assert waited < stall_s + 45 + 15  # the stall timeout, the grace after it, and slack
    # the rerun after a lost database is the killed server's test's


def test_a_workers_reused_connection_is_opened_again_after_its_server_restarted(tmp_path, own_postgres):
    from vectorize.db import reused_connection
    from vectorize.errors import DatabaseConfigError

    dsn = own_postgres.get_uri()
    first = reused_connection(dsn)
    assert reused_connection(dsn) is first
    restart_server(tmp_path / "pgdata", kill_server(tmp_path / "pgdata"))
    again = reused_connection(dsn)  # the next task of a worker whose server went away
    assert again is not first and again.execute("SELECT 1").fetchone() == (1,)
    again.execute("BEGIN")  # a task that left its transaction open hands it to no other
    third = reused_connection(dsn)
    assert third is not again and third.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with pytest.raises(DatabaseConfigError, match="no pgvector extension"):  # a write task's needs it
        reused_connection(dsn, vector=True)
    third.execute("CREATE EXTENSION vector")
    assert reused_connection(dsn, vector=True) is third and third.adapters.types.get("vector") is not None


WAITS_ON_THE_DATABASE = """
import sys, psycopg
from jobs.database_watch import DatabaseWatch
dsn = sys.argv[1]
conn = psycopg.connect(dsn, autocommit=True)
with DatabaseWatch(dsn, 2):  # a slow statement on a server that answers: not a stall
    conn.execute("SELECT pg_sleep(4)")
print("answered", flush=True)
with DatabaseWatch(dsn, 2):  # the test freezes the server now
    conn.execute("SELECT pg_sleep(120)")
print("returned", flush=True)
"""


def test_a_wait_on_a_frozen_database_outside_the_pipeline_ends_in_one_line(tmp_path, own_postgres):
    dsn = own_postgres.get_uri()
    waiter = subprocess.Popen(
        [sys.executable, "-c", WAITS_ON_THE_DATABASE, dsn], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert waiter.stdout.readline().strip() == "answered"
        frozen = server_pids(postmaster_pid(tmp_path / "pgdata"))
        started = time.monotonic()
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        try:
            code = waiter.wait(timeout=40)
        finally:
            for pid in frozen:
                send_signal(pid, signal.SIGCONT)
        waited = time.monotonic() - started
        out, err = waiter.communicate(timeout=10)
    finally:
        if waiter.poll() is None:
            os.killpg(waiter.pid, signal.SIGKILL)
    lines = err.strip().splitlines()
    assert code == 3 and "returned" not in out, (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("vectorize: error: the database at "), lines
    assert "has not answered for" in lines[0] and "run the same command" in lines[0]
    assert waited < 2 + 5 + 2 + 5  # the timeout, one probe, one poll, and slack
