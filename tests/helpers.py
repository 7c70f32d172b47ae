from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql

from jobs.launch import run_job
from vectorize.settings import RunSettings
from vectorize.summary import RunSummary


def cli_error_lines(*args: str) -> list[str]:
    """Run ``vectorize ARGS`` in a fresh process that must exit 2; the lines it wrote to stderr."""
    from tests.corpus import ROOT

    result = subprocess.run(
        [sys.executable, "-m", "vectorize.cli", *args], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert result.returncode == 2, result.stderr
    return result.stderr.strip().splitlines()


def run(source: Path | str, table: str, model: str, dsn: str, **settings) -> RunSummary:
    settings.setdefault("batch_size", 16)
    # One embedding actor: each actor is a new process that spends seconds importing torch and
    # sentence_transformers, for a few dozen rows. The tests of the default pool pass actors=None.
    settings.setdefault("actors", (1, 1))
    return run_job(RunSettings.of(source=str(source), table=table, model=model, dsn=dsn, **settings))


def query(dsn: str, statement: str, *params, table: str | None = None) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone():
            register_vector(conn)  # a fresh database has no vector type until a run creates it
        text = sql.SQL(statement).format(t=sql.Identifier(table)) if table else statement
        return conn.execute(text, params).fetchall()


def stored(dsn: str, table: str) -> dict[str, tuple[str, np.ndarray]]:
    """id -> (text, vector) of every stored row (chunk 0)."""
    return {
        i: (t, v.to_numpy().astype(np.float32))
        for i, t, v in query(dsn, "SELECT id, text, embedding FROM {t}", table=table)
    }


def errors(dsn: str, table: str) -> dict[str, tuple[str, str]]:
    """id -> (reason, raw) of every row in the errors table."""
    return {i: (r, raw) for i, r, raw in query(dsn, "SELECT id, reason, raw FROM {t}", table=f"{table}_errors")}


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def kill_once_stored(driver, dsn: str, table: str, rows: int = 16, within_s: float = 300) -> int:
    """Kill ``driver`` (a process started in a session of its own) and its group once table
    ``table`` (a quoted, possibly schema-qualified name) holds ``rows`` rows; the rows it held."""
    import os
    import signal
    import time

    deadline = time.monotonic() + within_s
    held = 0
    try:
        while time.monotonic() < deadline and driver.poll() is None:
            made = query(dsn, "SELECT to_regclass(%s)", table)[0][0]
            held = query(dsn, f"SELECT count(*) FROM {table}")[0][0] if made else 0
            if held >= rows:
                break
            time.sleep(0.2)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    return held
