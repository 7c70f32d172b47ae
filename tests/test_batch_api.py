"""``--batch-api``: the real ``openai`` SDK against the test server's Batch API on 127.0.0.1,
real Ray and a real Postgres. Every row is stored or an error row, no input is billed twice,
a killed run is collected by the next one instead of paid for again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import psycopg
import pytest

from jobs.launch import run_job
from tests.corpus import ROOT, commit_rows, write_jsonl
from tests.helpers import errors, query
from tests.openai_batch_server import BatchState
from tests.own_postgres import postmaster_pid, restart_server, send_signal, server_pids
from tests.poison import write_poison_corpus
from tests.test_openai_job import assert_vectors_are_the_servers, remote
from vectorize.errors import ConfigError
from vectorize.remote_settings import BatchApiSettings, RemoteSettings
from vectorize.secret import Secret
from vectorize.settings import RunSettings

pytestmark = pytest.mark.usefixtures("ray_cluster")


def batch_rows(count: int, repeated: int = 0) -> list[dict]:
    """Commit messages (cut short), the last ``repeated`` of them the same text as the first ones."""
    rows = [{**r, "text": r["text"][:200]} for r in commit_rows(count)]
    for i in range(repeated):
        rows[-1 - i]["text"] = rows[i]["text"]
    return rows


def batch_run(source, table: str, dsn: str, server, **batch):
    batch.setdefault("poll_interval_s", 0.1)
    settings = remote(server, batch=BatchApiSettings(**batch))
    return run_job(RunSettings.of(source=str(source), table=table, dsn=dsn, remote=settings))


def billed_twice(server) -> list[str]:
    return [text for text, times in server.state.batch.billed.items() if times > 1]


def test_a_batch_run_stores_every_row_at_the_batch_price_and_a_rerun_submits_nothing(
    tmp_path, pg_dsn, table_name, openai_server
):
    rows = batch_rows(120, repeated=5)
    source = write_jsonl(tmp_path / "c.jsonl", rows)
    summary = batch_run(source, table_name, pg_dsn, openai_server)
    assert (summary.rows_read, summary.failed) == (120, 0)
    assert (summary.embedded, summary.embedded_new, summary.reused) == (115, 115, 5)  # a repeated text: once
    assert_vectors_are_the_servers(pg_dsn, table_name, {r["id"] for r in rows})
    figures = summary.batch_api
    assert (figures.submitted, figures.collected, figures.open, figures.waiting_rows) == (1, 1, 0, 0)
    assert figures.tokens_billed == openai_server.state.batch.tokens_billed == summary.tokens
    assert figures.cost_usd == pytest.approx(summary.tokens * 0.01 / 1e6)  # half of the synchronous 0.02
    assert figures.saved_usd == pytest.approx(figures.cost_usd)
    assert openai_server.state.requests == 1  # the probe: everything else went through the batch
    assert "$" in summary.render() and "less than synchronous requests" in summary.render()

    again = batch_run(source, table_name, pg_dsn, openai_server)
    assert (again.embedded, again.unchanged, again.batch_api.submitted) == (0, 120, 0)
    assert openai_server.state.batch.batches_created == 1
    assert query(pg_dsn, "SELECT count(*) FROM {t}", table=f"{table_name}_pending") == [(0,)]


def test_an_azure_batch_deployment_is_batched_through_the_azure_client(tmp_path, pg_dsn, table_name, openai_server):
    rows = batch_rows(30)
    azure = RemoteSettings(
        provider="azure", azure_endpoint=openai_server.endpoint, azure_deployment="text-embedding-3-small",
        api_key=Secret(openai_server.state.api_key), batch=BatchApiSettings(poll_interval_s=0.1),
    )  # fmt: skip
    summary = run_job(RunSettings.of(source=str(write_jsonl(tmp_path / "c.jsonl", rows)), table=table_name,
                                     dsn=pg_dsn, remote=azure))  # fmt: skip
    assert (summary.embedded, summary.failed, summary.batch_api.collected) == (30, 0, 1)
    assert_vectors_are_the_servers(pg_dsn, table_name, {r["id"] for r in rows})
    assert openai_server.server.batches.batches[next(iter(openai_server.server.batches.batches))].endpoint == (
        "/embeddings"
    )


def test_no_wait_submits_and_a_later_run_collects_without_paying_again(tmp_path, pg_dsn, table_name, openai_server):
    rows = batch_rows(60)
    source = write_jsonl(tmp_path / "c.jsonl", rows)
    openai_server.state.batch.step_s = 1.0
    submitted = batch_run(source, table_name, pg_dsn, openai_server, wait=False)
    figures = submitted.batch_api
    assert (figures.submitted, figures.open, figures.waiting_rows) == (1, 1, 60)
    assert submitted.rows_read == 60 and submitted.embedded == 0 and submitted.failed == 0
    assert "wait for the Batch API: run the same command again to collect them" in submitted.render()
    assert query(pg_dsn, "SELECT count(*) FROM {t}", table=table_name) == [(0,)]
    with pytest.raises(ConfigError, match="has 1 Batch API batch open: run the same command with --batch-api"):
        run_job(RunSettings.of(source=str(source), table=table_name, dsn=pg_dsn, remote=remote(openai_server)))
    assert openai_server.state.requests == 2  # the two probes: a run without --batch-api paid for nothing
    preview = run_job(RunSettings.of(source=str(source), table=table_name, dsn=pg_dsn, dry_run=True,
                                     remote=remote(openai_server, batch=BatchApiSettings())))  # fmt: skip
    assert (preview.to_embed, preview.in_open_batches, preview.tokens) == (0, 60, 0)  # paid already
    with pytest.raises(ConfigError, match="has 1 Batch API batch open"):  # as the run without --batch-api is
        run_job(RunSettings.of(source=str(source), table=table_name, dsn=pg_dsn, dry_run=True,
                               remote=remote(openai_server)))  # fmt: skip

    time.sleep(3.2)
    collected = batch_run(source, table_name, pg_dsn, openai_server)
    assert (collected.embedded, collected.failed, collected.batch_api.submitted) == (60, 0, 0)
    assert collected.batch_api.collected == 1
    assert openai_server.state.batch.batches_created == 1 and billed_twice(openai_server) == []
    assert_vectors_are_the_servers(pg_dsn, table_name, {r["id"] for r in rows})


def test_a_batch_made_but_not_recorded_is_found_by_its_metadata(tmp_path, pg_dsn, table_name, openai_server):
    """As a run killed between creating its batch and recording it leaves the work table."""
    rows = batch_rows(40)
    source = write_jsonl(tmp_path / "c.jsonl", rows)
    openai_server.state.batch.step_s = 0.5
    batch_run(source, table_name, pg_dsn, openai_server, wait=False)
    query(pg_dsn, "UPDATE {t} SET batch_id = NULL, status = 'uploading' RETURNING 1", table=f"{table_name}_batches")
    collected = batch_run(source, table_name, pg_dsn, openai_server)
    assert (collected.embedded, collected.failed) == (40, 0)
    assert openai_server.state.batch.batches_created == 1 and billed_twice(openai_server) == []


def test_a_batch_gone_at_the_provider_has_its_texts_sent_again(tmp_path, pg_dsn, table_name, openai_server):
    rows = batch_rows(30)
    source = write_jsonl(tmp_path / "c.jsonl", rows)
    openai_server.state.batch.step_s = 30.0
    batch_run(source, table_name, pg_dsn, openai_server, wait=False)
    openai_server.server.batches.batches.clear()  # deleted, or another project's: retrieving it is a 404
    openai_server.state.batch.step_s = 0.1
    again = batch_run(source, table_name, pg_dsn, openai_server)
    assert (again.embedded, again.failed, again.batch_api.submitted) == (30, 0, 1)
    reasons = query(pg_dsn, "SELECT status, error FROM {t} WHERE status = 'failed'", table=f"{table_name}_batches")
    assert len(reasons) == 1 and "404" in reasons[0][1]


@pytest.mark.slow
def test_a_run_killed_after_submitting_is_collected_by_the_next(
    tmp_path, pg_dsn, table_name, openai_server, ray_cluster
):
    rows = batch_rows(80)
    source = write_jsonl(tmp_path / "c.jsonl", rows)
    openai_server.state.batch.step_s = 2.0
    driver = subprocess.Popen(
        [sys.executable, "-m", "jobs.embed", str(source), "--table", table_name, "--dsn", pg_dsn,
         "--provider", "openai", "--base-url", openai_server.base_url, "--api-key", openai_server.state.api_key,
         "--batch-api", "--poll-interval", "0.2", "--address", ray_cluster.get_runtime_context().gcs_address,
         "--json"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline and driver.poll() is None and not openai_server.state.batch.batches_created:
            time.sleep(0.1)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    assert openai_server.state.batch.batches_created == 1, driver.stderr.read()[-2000:]

    resumed = batch_run(source, table_name, pg_dsn, openai_server)
    assert (resumed.embedded, resumed.failed, resumed.batch_api.submitted) == (80, 0, 0)
    assert openai_server.state.batch.batches_created == 1 and billed_twice(openai_server) == []
    assert_vectors_are_the_servers(pg_dsn, table_name, {r["id"] for r in rows})
    history = query(pg_dsn, "SELECT status FROM vectorize_runs WHERE collection = %s ORDER BY started_at", table_name)
    assert history == [("abandoned",), ("succeeded",)]


def test_answers_missing_refused_or_expired_lose_nothing(tmp_path, pg_dsn, table_name, openai_server):
    rows = batch_rows(90)
    rows[10]["text"] = "POISON commit message the server refuses"
    source = write_jsonl(tmp_path / "c.jsonl", rows)
    state = openai_server.state.batch
    state.reject_match, state.expire_next = "POISON", 1
    summary = batch_run(source, table_name, pg_dsn, openai_server)
    assert summary.rows_read == 90
    assert summary.failed_by_reason == {"rejected_input": 1}
    assert errors(pg_dsn, table_name)[rows[10]["id"]][0] == "rejected_input"
    assert summary.embedded == 89
    assert billed_twice(openai_server) == []  # the expired half and the refused request's others, sent once more
    assert state.batches_created >= 2

    # an output file that leaves a request out: its inputs are error rows, the rest are stored
    state.__init__(leave_out=1)
    other = f"{table_name}_b"
    more = write_jsonl(tmp_path / "d.jsonl", [{**r, "text": r["text"] + " (again)"} for r in batch_rows(250)])
    left_out = batch_run(more, other, pg_dsn, openai_server)
    assert left_out.rows_read == 250 and left_out.embedded + left_out.failed == 250
    assert left_out.failed_by_reason == {"bad_response": 50}  # the last request of three (100 inputs a request)
    reasons = query(pg_dsn, "SELECT DISTINCT message FROM {t}", table=f"{other}_errors")
    assert reasons == [("the batch completed without an answer for this input",)]


def test_the_enqueued_token_limit_is_learned_and_the_rest_queued(tmp_path, pg_dsn, table_name, openai_server):
    rows = batch_rows(150)
    source = write_jsonl(tmp_path / "c.jsonl", rows)
    total = sum(openai_server.server.counter.count([r["text"] for r in rows]))
    openai_server.state.batch = BatchState(step_s=0.1, enqueued_token_limit=total // 3)
    summary = batch_run(source, table_name, pg_dsn, openai_server)
    assert (summary.embedded, summary.failed) == (150, 0)
    created = openai_server.state.batch.batches_created
    assert 4 <= created <= 8 and summary.batch_api.submitted == created  # one refused, then files within the limit
    assert billed_twice(openai_server) == []


def test_cancel_keeps_what_finished_and_the_rest_waits(tmp_path, pg_dsn, table_name, openai_server):
    rows = batch_rows(250)
    source = write_jsonl(tmp_path / "c.jsonl", rows)
    openai_server.state.batch.step_s = 30.0
    batch_run(source, table_name, pg_dsn, openai_server, wait=False)
    cancelled = batch_run(source, table_name, pg_dsn, openai_server, cancel=True)
    assert cancelled.batch_api.collected == 1 and cancelled.batch_api.open == 0
    assert openai_server.server.batches.open_batches() == 0
    # the server had answered one request of three (100 inputs each) when it was cancelled
    assert (cancelled.embedded, cancelled.batch_api.waiting_rows, cancelled.failed) == (100, 150, 0)

    openai_server.state.batch.step_s = 0.1
    rest = batch_run(source, table_name, pg_dsn, openai_server)
    assert rest.embedded == cancelled.batch_api.waiting_rows and rest.failed == 0
    assert_vectors_are_the_servers(pg_dsn, table_name, {r["id"] for r in rows})
    assert billed_twice(openai_server) == []


def test_batch_api_refusals_are_one_line_before_any_work(tmp_path, pg_dsn, table_name, openai_server):
    source = write_jsonl(tmp_path / "c.jsonl", batch_rows(5))
    openai_server.state.batch.enabled = False
    with pytest.raises(ConfigError, match=r"has no Batch API \(404 on /files\): drop --batch-api"):
        batch_run(source, table_name, pg_dsn, openai_server)
    assert openai_server.state.requests <= 1  # the probe
    assert query(pg_dsn, "SELECT to_regclass(%s)", table_name) == [(None,)]

    with pytest.raises(ConfigError, match="--batch-api takes no --fallback"):
        replace(remote(openai_server), batch=BatchApiSettings(), fallback=remote(openai_server))


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--batch-api"], "--batch-api is a service's: add --provider openai (or azure); 'local' embeds here"),
        (["--no-wait"], "--poll-interval, --no-wait and --cancel go with --batch-api"),
        (["--provider", "openai", "--api-key", "k", "--cancel"], "--poll-interval, --no-wait and --cancel go with"),
        (["--base-url", "http://127.0.0.1:9/v1", "--tpm", "1000"],
         "--base-url, --tpm are a remote model's: add --provider openai (or azure), or drop them"),
        (["--provider", "openai", "--api-key", "k", "--batch-api", "--dest", "column"],
         "--batch-api writes into a collection: drop --dest column, or --batch-api"),
    ],
)  # fmt: skip
def test_options_that_do_not_go_together_are_one_line(tmp_path, capsys, extra, says):
    from vectorize.cli import main as cli_main

    source = write_jsonl(tmp_path / "c.jsonl", batch_rows(3))
    assert cli_main(["run", str(source), "--table", "t_options", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vectorize: error: ") and says in err[0], err


def test_hostile_records_through_the_batch_api_each_stored_or_an_error_row(tmp_path, pg_dsn, table_name, openai_server):
    corpus = write_poison_corpus(tmp_path / "poison.jsonl", [r["text"] for r in commit_rows(60)])
    summary = batch_run(corpus.path, table_name, pg_dsn, openai_server)
    stored = {key for (key,) in query(pg_dsn, "SELECT DISTINCT id FROM {t}", table=table_name)}
    failed = dict(query(pg_dsn, "SELECT id, reason FROM {t}", table=f"{table_name}_errors"))
    assert stored == corpus.stored and failed == corpus.failed
    assert len(stored) + len(failed) == corpus.lines == summary.rows_read
    assert summary.truncated == 1 and summary.batch_api.waiting_rows == 0  # the text of 600,000 words, cut
    assert billed_twice(openai_server) == []


def _batch_cli(source, table: str, dsn: str, server, address: str, *extra: str) -> subprocess.Popen:
    args = [
        "run",
        str(source),
        "--table",
        table,
        "--dsn",
        dsn,
        "--provider",
        "openai",
        "--base-url",
        server.base_url,
        "--api-key",
        server.state.api_key,
        "--batch-api",
        "--poll-interval",
        "0.5",
        "--address",
        address,
        *extra,
    ]
    return subprocess.Popen([sys.executable, "-m", "vectorize.cli", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip


def _when_a_batch_is_recorded(driver: subprocess.Popen, dsn: str, table: str) -> None:
    deadline = time.monotonic() + 180
    while True:
        assert driver.poll() is None, driver.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "no batch recorded in 180 s"
        try:
            if query(dsn, "SELECT count(*) FROM {t} WHERE batch_id IS NOT NULL", table=f"{table}_batches")[0][0]:
                return
        except psycopg.Error:  # the run has not made its tables yet
            pass
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["killed", "frozen"])
def test_the_database_lost_while_batches_wait_is_one_line_and_the_rerun_collects(
    tmp_path, own_postgres, table_name, openai_server, ray_cluster, fault
):
    dsn = own_postgres.get_uri()
    rows = batch_rows(40)
    source = write_jsonl(tmp_path / "c.jsonl", rows)
    openai_server.state.batch.step_s = 20.0  # the run waits on its batch while the database goes
    stall = "8"
    driver = _batch_cli(source, table_name, dsn, openai_server, ray_cluster.get_runtime_context().gcs_address,
                        "--stall-timeout", stall, "--json")  # fmt: skip
    try:
        _when_a_batch_is_recorded(driver, dsn, table_name)
        server = server_pids(postmaster_pid(tmp_path / "pgdata"))
        for pid in server if fault == "frozen" else server[:1]:
            os.kill(pid, signal.SIGSTOP if fault == "frozen" else signal.SIGKILL)
        try:
            _, err = driver.communicate(timeout=90)
        finally:
            for pid in server:
                send_signal(pid, signal.SIGCONT)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.communicate()
    lines = err.strip().splitlines()
    assert driver.returncode == 3, lines
    assert len(lines) == 1 and "database" in lines[0] and "run the same command" in lines[0], lines
    if fault == "killed":
        assert restart_server(tmp_path / "pgdata", server).get_uri() == dsn
    openai_server.state.batch.step_s = 0.1
    resumed = batch_run(source, table_name, dsn, openai_server)
    assert (resumed.embedded, resumed.failed, resumed.batch_api.submitted) == (40, 0, 0)
    assert openai_server.state.batch.batches_created == 1 and billed_twice(openai_server) == []
    assert_vectors_are_the_servers(dsn, table_name, {r["id"] for r in rows})
