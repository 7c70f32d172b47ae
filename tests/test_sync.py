"""Keeping a collection equal to its source: --sync, fingerprints, and two runs at once."""

from __future__ import annotations

import logging
import threading

import numpy as np
import psycopg
import pytest

from tests.corpus import write_jsonl
from tests.helpers import errors, query, run, stored
from tests.test_sql_source import make_issues_table
from vectorize.errors import ConfigError

pytestmark = pytest.mark.usefixtures("ray_cluster")


def execute(dsn: str, statement: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statement)


def test_sql_sync_inserts_updates_deletes_with_exact_counts(tiny_model, pg_dsn, table_name, caplog):
    src = f"{table_name}_src"
    make_issues_table(pg_dsn, src, 30)
    options = {"source_table": src, "text": "{title}\n\n{body}", "sync": True}
    first = run(pg_dsn, table_name, tiny_model, pg_dsn, **options)
    assert (first.rows_read, first.embedded, first.embedded_new, first.deleted) == (30, 30, 30, 0)
    before = stored(pg_dsn, table_name)

    execute(pg_dsn, f"INSERT INTO {src} (id, title, body) VALUES (31, 'new one', 'fresh'), (32, 'new two', 'fresh')")
    execute(pg_dsn, f"UPDATE {src} SET body = body || ' (edited)' WHERE id IN (3, 4, 5)")
    execute(pg_dsn, f"UPDATE {src} SET votes = 99 WHERE id = 6")
    execute(pg_dsn, f"DELETE FROM {src} WHERE id IN (10, 11, 12, 13)")
    second = run(pg_dsn, table_name, tiny_model, pg_dsn, **options)
    assert (second.rows_read, second.embedded, second.embedded_new) == (28, 5, 2)
    assert (second.unchanged, second.refreshed, second.deleted, second.failed) == (23, 1, 4, 0)

    after = stored(pg_dsn, table_name)
    source = dict(query(pg_dsn, f"SELECT id::text, title || E'\\n\\n' || body FROM {src}"))
    assert {key: text for key, (text, _) in after.items()} == source
    untouched = set(source) - {"3", "4", "5", "6", "31", "32"}
    assert all(after[key][1].tobytes() == before[key][1].tobytes() for key in untouched | {"6"})
    assert not any(np.array_equal(after[k][1], before[k][1]) for k in ("3", "4", "5"))
    assert query(pg_dsn, "SELECT metadata->>'votes' FROM {t} WHERE id = '6'", table=table_name) == [("99",)]

    with caplog.at_level(logging.INFO, logger="jobs.sql_delta"):
        third = run(pg_dsn, table_name, tiny_model, pg_dsn, **options)
    assert (third.rows_read, third.embedded, third.unchanged, third.deleted) == (28, 0, 28, 0)
    assert "has not changed since the last run" in caplog.text  # no row read, no fingerprint computed

    execute(pg_dsn, f"UPDATE {src} SET title = 'renamed' WHERE id = 20")
    fourth = run(pg_dsn, table_name, tiny_model, pg_dsn, **options)
    assert (fourth.rows_read, fourth.embedded, fourth.unchanged) == (28, 1, 27)


def test_file_sync_deletes_rows_and_their_errors_gone_from_the_source(tmp_path, tiny_model, pg_dsn, table_name):
    rows = [{"id": f"r{i}", "text": f"line {i} of the file"} for i in range(12)] + [{"id": "bad", "text": ""}]
    source = write_jsonl(tmp_path / "rows.jsonl", rows)
    first = run(source, table_name, tiny_model, pg_dsn, sync=True)
    assert (first.embedded, first.failed, first.deleted) == (12, 1, 0)
    write_jsonl(source, rows[2:12])
    second = run(source, table_name, tiny_model, pg_dsn, sync=True)
    assert (second.rows_read, second.unchanged, second.deleted) == (10, 10, 2)
    assert sorted(stored(pg_dsn, table_name)) == sorted(f"r{i}" for i in range(2, 12))
    assert errors(pg_dsn, table_name) == {}
    without_sync = run(write_jsonl(source, rows[5:12]), table_name, tiny_model, pg_dsn)
    assert without_sync.deleted is None and len(stored(pg_dsn, table_name)) == 10


def test_sync_refuses_limit(tmp_path, tiny_model, pg_dsn, table_name):
    source = write_jsonl(tmp_path / "rows.jsonl", [{"id": "a", "text": "x"}])
    with pytest.raises(ConfigError, match="cannot take --limit"):
        run(source, table_name, tiny_model, pg_dsn, sync=True, limit=1)


def test_two_runs_at_once_end_as_one(tmp_path, tiny_model, pg_dsn, table_name):
    rows = [{"id": f"r{i}", "text": f"concurrent row {i} on topic {i % 11}"} for i in range(80)]
    source = write_jsonl(tmp_path / "rows.jsonl", rows)
    summaries, failures = [], []

    def one_run() -> None:
        try:
            summaries.append(run(source, table_name, tiny_model, pg_dsn))
        except Exception as exc:
            failures.append(exc)

    threads = [threading.Thread(target=one_run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert failures == [] and len(summaries) == 2
    assert sorted(s.embedded for s in summaries) == [0, 80]
    assert query(pg_dsn, "SELECT count(*), count(DISTINCT id) FROM {t}", table=table_name) == [(80, 80)]


def test_an_unchanged_file_is_not_read_again_until_it_or_the_collection_changes(
    tmp_path, tiny_model, pg_dsn, table_name, caplog
):
    rows = [{"id": f"r{i}", "text": f"file row {i} about topic {i % 5}"} for i in range(20)]
    source = write_jsonl(tmp_path / "rows.jsonl", rows, extra_lines=["{not json"])
    first = run(source, table_name, tiny_model, pg_dsn)
    assert (first.rows_read, first.embedded, first.failed) == (21, 20, 1)

    with caplog.at_level(logging.INFO, logger="jobs.file_state"):
        again = run(source, table_name, tiny_model, pg_dsn)
    assert (again.rows_read, again.unchanged, again.embedded) == (21, 20, 0)
    assert again.failed_by_reason == {"malformed_json": 1}  # its error row stands, as a run reading it would say
    assert again.batch_metrics is None and "has not changed since the last run" in caplog.text  # Ray not used

    execute(pg_dsn, f"DELETE FROM {table_name} WHERE id = 'r3'")  # the collection changed: every row read
    restored = run(source, table_name, tiny_model, pg_dsn)
    assert (restored.embedded, restored.embedded_new, restored.unchanged) == (1, 1, 19)
    assert "r3" in stored(pg_dsn, table_name)

    rows[7]["text"] += " (edited)"
    write_jsonl(source, rows, extra_lines=["{not json"])  # the same size would not hide it: the digest differs
    edited = run(source, table_name, tiny_model, pg_dsn)
    assert (edited.embedded, edited.unchanged) == (1, 19)

    assert run(source, table_name, tiny_model, pg_dsn).batch_metrics is None  # the state the edited run recorded
    limited = run(source, table_name, tiny_model, pg_dsn, limit=5)  # reads part of the source: no state stands
    assert (limited.batch_metrics is not None, limited.rows_read) == (True, 5)
    assert run(source, table_name, tiny_model, pg_dsn).batch_metrics is not None

    assert run(source, table_name, tiny_model, pg_dsn, sync=True).batch_metrics is not None  # not read in sync yet
    synced_again = run(source, table_name, tiny_model, pg_dsn, sync=True)
    assert (synced_again.batch_metrics, synced_again.deleted, synced_again.unchanged) == (None, 0, 20)
    assert len(stored(pg_dsn, table_name)) == 20


def test_a_run_from_another_source_leaves_no_state_to_skip_by(tmp_path, tiny_model, pg_dsn, table_name):
    rows = [{"id": f"r{i}", "text": f"row {i}"} for i in range(6)]
    source = write_jsonl(tmp_path / "rows.jsonl", rows)
    run(source, table_name, tiny_model, pg_dsn)
    other = write_jsonl(tmp_path / "other.jsonl", [{"id": "r1", "text": "row 1, told again by another file"}])
    run(other, table_name, tiny_model, pg_dsn, limit=1)  # an incomplete run changes a row, not the count
    again = run(source, table_name, tiny_model, pg_dsn)
    assert (again.embedded, again.unchanged) == (1, 5)
    assert stored(pg_dsn, table_name)["r1"][0] == "row 1"
