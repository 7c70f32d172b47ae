"""``--dry-run``: the figures of what a run would do, before it does it, and nothing written;
the run after it then does exactly that (rows embedded, tokens)."""

from __future__ import annotations

import json
import subprocess
import sys

import psycopg
import pytest

from jobs.launch import run_job
from tests.corpus import ROOT, commit_rows, write_jsonl
from tests.helpers import cli_error_lines, query, run
from tests.test_openai_job import remote
from vectorize.remote_settings import BatchApiSettings
from vectorize.settings import RunSettings

pytestmark = pytest.mark.usefixtures("ray_cluster")


def preview(source, table: str, dsn: str, **settings):
    return run_job(RunSettings.of(source=str(source), table=table, dsn=dsn, dry_run=True, **settings))


def written(dsn: str, table: str) -> tuple:
    """Whether anything of the collection exists: its table, its registry row, its runs (asked
    without pgvector's types: a dry run on a new database does not even create the extension)."""
    with psycopg.connect(dsn) as conn:
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()[0]
        if not conn.execute("SELECT to_regclass('vectorize_collections') IS NOT NULL").fetchone()[0]:
            return exists, False, 0
        registered = conn.execute("SELECT count(*) FROM vectorize_collections WHERE collection = %s", (table,))
        runs = conn.execute("SELECT count(*) FROM vectorize_runs WHERE collection = %s", (table,)).fetchone()[0]
        return exists, bool(registered.fetchone()[0]), runs


@pytest.mark.slow
def test_a_dry_run_of_a_local_model_counts_what_the_run_then_does(tmp_path, pg_dsn, table_name, tiny_model):
    rows = [{**r, "text": r["text"][:300]} for r in commit_rows(60)]
    rows[59]["text"] = rows[0]["text"]  # the same text twice: embedded once, reused once
    rows.append({"id": "empty", "text": ""})
    source = write_jsonl(tmp_path / "c.jsonl", rows)
    before = preview(source, table_name, pg_dsn, model=tiny_model, batch_size=16)
    assert written(pg_dsn, table_name) == (False, False, 0)
    assert (before.rows_read, before.to_embed, before.new, before.reused, before.failed) == (61, 59, 59, 1, 1)
    assert before.failed_by_reason == {"empty_text": 1}
    assert before.tokens > 59 and before.cost_usd is None and before.seconds_estimate > 0
    assert "measured here" in before.estimate_basis and "nothing was written" in before.render()

    done = run(source, table_name, tiny_model, pg_dsn)
    assert (done.embedded, done.reused, done.tokens, done.failed) == (59, 1, before.tokens, 1)

    rows[1]["text"] += " edited"
    rows[2]["text"] += " edited"
    rows += [{"id": "n1", "text": "a new commit message"}, {"id": "n2", "text": "another new commit message"}]
    write_jsonl(source, rows)
    again = preview(source, table_name, pg_dsn, model=tiny_model, batch_size=16)
    assert (again.to_embed, again.new, again.changed, again.unchanged) == (4, 2, 2, 58)
    runs = query(pg_dsn, "SELECT count(*) FROM vectorize_runs WHERE collection = %s", table_name)[0][0]
    assert runs == 1  # the dry run recorded none
    after = run(source, table_name, tiny_model, pg_dsn)
    assert (after.embedded, after.embedded_new, after.tokens) == (4, 2, again.tokens)


def test_a_dry_run_of_a_remote_model_asks_the_server_nothing_and_prices_both_ways(
    tmp_path, pg_dsn, table_name, openai_server
):
    rows = [{**r, "text": r["text"][:400]} for r in commit_rows(50)]
    source = write_jsonl(tmp_path / "c.jsonl", rows)
    settings = remote(openai_server, rate_tier="tier1")
    before = preview(source, table_name, pg_dsn, remote=settings)
    assert openai_server.state.requests == 0 and written(pg_dsn, table_name) == (False, False, 0)
    assert before.to_embed == 50 and before.tokens > 0
    assert before.tokens_billed == before.tokens  # no text past the window
    assert before.cost_usd == pytest.approx(before.tokens * 0.02 / 1e6)
    assert before.batch_cost_usd == pytest.approx(before.cost_usd / 2)
    assert before.seconds_estimate is not None and "rate limits" in before.estimate_basis

    done = run_job(RunSettings.of(source=str(source), table=table_name, dsn=pg_dsn, remote=settings))
    assert (done.embedded, done.tokens) == (before.to_embed, before.tokens)
    assert done.api_usage.tokens_billed == before.tokens

    batch = preview(source, table_name, pg_dsn, remote=remote(openai_server, batch=BatchApiSettings()))
    assert (batch.to_embed, batch.unchanged, batch.tokens) == (0, 50, 0)
    assert "24-hour" in batch.estimate_basis


@pytest.mark.slow
def test_dry_run_json_is_one_object_and_a_mismatch_is_one_line(
    tmp_path, pg_dsn, table_name, tiny_model, other_tiny_model, ray_cluster
):
    source = write_jsonl(tmp_path / "c.jsonl", [{"id": f"r{i}", "text": f"row {i}"} for i in range(12)])
    args = ["run", str(source), "--table", table_name, "--model", tiny_model, "--dsn", pg_dsn, "--dry-run", "--json",
            "--address", ray_cluster.get_runtime_context().gcs_address]  # fmt: skip
    result = subprocess.run([sys.executable, "-m", "vectorize.cli", *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["dry_run"] is True and report["to_embed"] == 12 and report["exists"] is False

    run(source, table_name, tiny_model, pg_dsn)
    lines = cli_error_lines("run", str(source), "--table", table_name, "--model", other_tiny_model, "--dsn", pg_dsn,
                            "--dry-run")  # fmt: skip
    assert len(lines) == 1 and lines[0].startswith("vectorize: error: collection") and "holds vectors of" in lines[0]
