"""The whole job with a remote provider: real Ray, real Postgres, the real openai SDK, and the
test server on 127.0.0.1 enforcing limits and failing on purpose. No row is lost or stored twice."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jobs.launch import run_job
from tests.corpus import commit_rows, write_jsonl
from tests.helpers import errors, query, stored
from tests.openai_server import vector_for
from vectorize.cli import main as cli_main
from vectorize.errors import ModelMismatchError, ProviderStopError
from vectorize.rate_limits import RateLimits
from vectorize.remote_settings import RemoteSettings
from vectorize.secret import Secret
from vectorize.settings import RunSettings
from vectorize.text import clean_text

pytestmark = pytest.mark.usefixtures("ray_cluster")


def remote(server, **kwargs) -> RemoteSettings:
    kwargs.setdefault("api_key", Secret(server.state.api_key))
    kwargs.setdefault("timeout_s", 2.0)
    kwargs.setdefault("max_attempts", 6)
    return RemoteSettings(base_url=server.base_url, **kwargs)


def run_remote(source, table: str, dsn: str, settings: RemoteSettings, **kwargs):
    kwargs.setdefault("batch_size", 32)
    kwargs.setdefault("actors", (2, 2))
    return run_job(RunSettings.of(source=str(source), table=table, dsn=dsn, remote=settings, **kwargs))


def assert_vectors_are_the_servers(dsn: str, table: str, expected_ids: set[str]) -> None:
    rows = stored(dsn, table)
    assert set(rows) == expected_ids
    for text, vector in rows.values():
        np.testing.assert_allclose(vector, vector_for(text, 1536), atol=1e-6)
    assert query(dsn, "SELECT count(*) FROM {t}", table=table)[0][0] == len(expected_ids)


def short_rows(count: int) -> list[dict]:
    """Commit subjects only (about 15 tokens each), so that a run meets the limits in seconds."""
    return [{**r, "text": r["text"][:60]} for r in commit_rows(count)]


def test_every_row_gets_the_servers_vector_within_a_shared_budget(tmp_path, pg_dsn, table_name, openai_server):
    rows = short_rows(200)
    openai_server.state.__init__(rpm=300, tpm=12_000, window_s=10.0, hang_s=3.0)  # a strict server
    source = write_jsonl(tmp_path / "c.jsonl", rows)
    settings = remote(openai_server, limits=RateLimits(rpm=300, tpm=12_000), max_in_flight=4)
    summary = run_remote(source, table_name, pg_dsn, settings)
    assert (summary.rows_read, summary.failed) == (200, 0)
    assert summary.embedded + summary.reused == 200
    assert_vectors_are_the_servers(pg_dsn, table_name, {r["id"] for r in rows})
    usage = summary.api_usage
    assert usage.requests >= summary.embedded / 32 and usage.tokens_billed == summary.tokens
    assert usage.throttled <= 2  # the budget is shared: the actors do not run into the server's limits
    assert usage.cost_usd == pytest.approx(summary.tokens * 0.02 / 1e6)
    history = query(pg_dsn, "SELECT api_usage FROM vectorize_runs WHERE run_id = %s", summary.run_id)[0][0]
    assert history["requests"] == usage.requests

    again = run_remote(source, table_name, pg_dsn, settings)
    assert (again.embedded, again.unchanged, again.api_usage.requests) == (0, 200, 0)


def test_a_server_stricter_than_configured_slows_everyone_and_nothing_is_lost(
    tmp_path, pg_dsn, table_name, openai_server
):
    rows = short_rows(200)
    openai_server.state.__init__(rpm=600, tpm=12_000, window_s=5.0, hang_s=3.0)  # holds 1,000 tokens
    settings = remote(
        openai_server, limits=RateLimits(tpm=1_000_000), max_input_tokens=256, request_tokens=300, max_attempts=10
    )
    summary = run_remote(write_jsonl(tmp_path / "c.jsonl", rows), table_name, pg_dsn, settings)
    assert summary.failed == 0
    state = openai_server.state
    assert state.seconds_between_first_and_last() >= (state.tokens_served - 1000) / 200 * 0.9  # the limit bound
    assert state.statuses[429] <= 3  # learned from the headers instead of hammering
    assert_vectors_are_the_servers(pg_dsn, table_name, {r["id"] for r in rows})


def test_transient_failures_and_bad_answers_lose_nothing(tmp_path, pg_dsn, table_name, openai_server):
    rows = commit_rows(150)
    bad_row, nan_row, short_row, narrow_row = rows[10], rows[77], rows[120], rows[140]
    for kind in ("500", "500", "429", "timeout", "drop", "malformed"):
        openai_server.add_fault(kind, skip=1)  # past the run's first request, which checks the model
    openai_server.add_fault("reject_input", times=-1, match=clean_text(bad_row["text"]))
    openai_server.add_fault("nan", match=clean_text(nan_row["text"]))
    openai_server.add_fault("fewer", match=clean_text(short_row["text"]))
    openai_server.add_fault("wrong_dims", match=clean_text(narrow_row["text"]))
    source = write_jsonl(tmp_path / "c.jsonl", rows)
    summary = run_remote(source, table_name, pg_dsn, remote(openai_server))
    assert summary.api_usage.retries >= 6 and summary.api_usage.throttled >= 1
    failed = errors(pg_dsn, table_name)
    assert failed[bad_row["id"]][0] == "rejected_input"
    assert {failed[r["id"]][0] for r in (nan_row, short_row, narrow_row)} == {"bad_response"}
    assert set(summary.failed_by_reason) == {"rejected_input", "bad_response"}
    assert summary.failed == len(failed)
    good = stored(pg_dsn, table_name)
    assert not set(good) & set(failed)  # every row is stored or an error, never both, never neither
    assert set(good) | set(failed) == {r["id"] for r in rows}
    assert_vectors_are_the_servers(pg_dsn, table_name, set(good))

    openai_server.state.faults.clear()  # the server mends: a rerun stores the failed rows, and only them
    again = run_remote(source, table_name, pg_dsn, remote(openai_server))
    assert (again.embedded, again.failed) == (len(failed), 0)
    assert_vectors_are_the_servers(pg_dsn, table_name, {r["id"] for r in rows})
    assert errors(pg_dsn, table_name) == {}


def test_a_refused_key_stops_the_run_and_a_rerun_finishes_it(tmp_path, pg_dsn, table_name, openai_server):
    rows = commit_rows(160)
    source = write_jsonl(tmp_path / "c.jsonl", rows)
    openai_server.add_fault("quota", times=-1, match=clean_text(rows[100]["text"]))
    with pytest.raises(ProviderStopError, match="no quota left"):
        run_remote(source, table_name, pg_dsn, remote(openai_server), batch_size=16)
    partial = stored(pg_dsn, table_name)
    assert rows[100]["id"] not in partial and len(partial) < 160
    answered = set(openai_server.state.texts_served) & {clean_text(r["text"]) for r in rows}  # billed: each stored
    assert answered and answered <= {text for text, _ in partial.values()}
    assert errors(pg_dsn, table_name) == {}  # the refused rows are left for the next run, not failed
    status = query(pg_dsn, "SELECT status FROM vectorize_runs WHERE collection = %s", table_name)
    assert status == [("failed",)]

    openai_server.state.faults.clear()
    again = run_remote(source, table_name, pg_dsn, remote(openai_server), batch_size=16)
    assert again.failed == 0 and again.unchanged == len(partial)
    assert_vectors_are_the_servers(pg_dsn, table_name, {r["id"] for r in rows})


def test_the_fallback_takes_over_and_another_model_is_refused(tmp_path, pg_dsn, table_name, openai_server, monkeypatch):
    from tests.openai_server import RunningServer, ServerState

    backup = RunningServer(ServerState())
    try:
        rows = commit_rows(60)
        source = write_jsonl(tmp_path / "c.jsonl", rows)
        monkeypatch.setenv("OPENAI_API_KEY", backup.state.api_key)
        wrong = remote(openai_server, fallback=RemoteSettings(base_url=backup.base_url, model="text-embedding-3-large"))
        with pytest.raises(ModelMismatchError, match="not the same model"):
            run_remote(source, table_name, pg_dsn, wrong)
        assert backup.state.requests == 1  # its probe, nothing more

        openai_server.add_fault("500", times=-1, skip=1)
        same = remote(openai_server, max_attempts=2, fallback=RemoteSettings(base_url=backup.base_url))
        summary = run_remote(source, table_name, pg_dsn, same)
        assert summary.failed == 0
        assert_vectors_are_the_servers(pg_dsn, table_name, {r["id"] for r in rows})
        assert backup.state.texts_served.total() >= summary.embedded
    finally:
        backup.stop()


def test_the_api_key_never_reaches_output_logs_or_the_database(
    tmp_path, pg_dsn, table_name, openai_server, capsys, caplog
):
    key = "sk-very-secret-key-0123456789"
    openai_server.state.api_key = key
    rows = commit_rows(40)
    source = write_jsonl(tmp_path / "c.jsonl", rows)
    args = ["--debug", "run", str(source), "--table", table_name, "--dsn", pg_dsn, "--provider", "openai"]
    args += ["--base-url", openai_server.base_url, "--api-key", key, "--json", "--actors", "1"]
    openai_server.add_fault("reject_input", times=-1, match=clean_text(rows[3]["text"]))
    assert cli_main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["failed_by_reason"] == {"rejected_input": 1} and summary["api_usage"]["requests"] >= 1
    openai_server.add_fault("401", times=-1, skip=1)
    assert cli_main([*args[:-2], "--actors", "2", "--text", "{text} again"]) == 2
    captured = capsys.readouterr()
    assert "API key was refused" in captured.err and len(captured.err.strip().splitlines()) >= 1
    everything = captured.out + captured.err + caplog.text + json.dumps(summary)
    everything += json.dumps(query(pg_dsn, "SELECT * FROM {t}", table=f"{table_name}_errors"), default=str)
    everything += json.dumps(query(pg_dsn, "SELECT * FROM vectorize_runs"), default=str)
    everything += json.dumps(query(pg_dsn, "SELECT * FROM vectorize_collections"), default=str)
    assert key not in everything


def test_search_embeds_the_query_with_the_collections_remote_model(
    tmp_path, pg_dsn, table_name, openai_server, capsys, monkeypatch
):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    rows = short_rows(30)
    run_remote(write_jsonl(tmp_path / "c.jsonl", rows), table_name, pg_dsn, remote(openai_server))
    texts = [clean_text(r["text"]) for r in rows]
    target = next(r for r, t in zip(rows, texts, strict=True) if texts.count(t) == 1)
    base = ["search", clean_text(target["text"]), "--table", table_name, "--dsn", pg_dsn, "-k", "3", "--json"]
    assert cli_main(base) == 2  # the collection remembers the server, not the key
    assert "OPENAI_API_KEY" in capsys.readouterr().err
    assert cli_main([*base, "--api-key", openai_server.state.api_key]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["id"] == target["id"] and hits[0]["similarity"] == pytest.approx(1.0, abs=1e-4)
    wrong = ["--base-url", "http://127.0.0.1:9/v1", "--api-key", "k", "--request-timeout", "1", "--max-attempts", "1"]
    assert cli_main([*base, *wrong]) == 2  # an option given overrides what it remembers
    assert "127.0.0.1:9" in capsys.readouterr().err
