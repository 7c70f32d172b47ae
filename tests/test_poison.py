"""Hostile records among real ones: each is stored by a documented rule or is an error row with
its reason, the rest of the run is stored, and every line is accounted for."""

from __future__ import annotations

import json
import subprocess
import sys

import psycopg
import pytest

from extract.records import RecordSpec, prepare_json_line
from tests.corpus import ROOT, commit_rows
from tests.helpers import query, run
from tests.poison import write_poison_corpus
from tests.tracker_exports import adf, jira_issue, paragraph
from vectorize import rows
from vectorize.sanitize import MAX_ID_BYTES, NotStorable, check_id, clean, storable
from vectorize.text import TextTemplate

SPEC = RecordSpec("id", TextTemplate.parse("text"))


def test_the_rules_for_what_postgres_cannot_hold():
    assert clean("a\x00b\ud800c") == "ab\ufffdc"
    assert storable("a\x00b\udcff") == "a\\x00b\\udcff"
    assert storable("plain ünïcode") == "plain ünïcode"
    assert check_id("x" * MAX_ID_BYTES, "id") == "x" * MAX_ID_BYTES
    for key, reason in (("a\x00", "bad_id"), ("a\udc80", "bad_id"), ("é" * MAX_ID_BYTES, "id_too_long")):
        with pytest.raises(NotStorable) as refused:
            check_id(key, "id")
        assert refused.value.reason == reason


def test_sanitized_rows_say_so_and_error_rows_hold_any_raw_line():
    row = prepare_json_line('{"id": "a", "text": "x\\u0000y \\ud800", "m": ["\\udfff"]}', "f:1", SPEC)
    assert (row["status"], row["text"], row["sanitized"]) == (rows.EMBED, "xy \ufffd", True)
    assert json.loads(row["metadata"]) == {"m": ["\ufffd"]}
    raw = '{"id": "a\x00", "text": 1}'
    row = prepare_json_line(raw, "f:2", SPEC)
    assert (row["reason"], row["id"], row["raw"]) == ("bad_id", "f:2", '{"id": "a\\x00", "text": 1}')
    assert prepare_json_line("[" * 100_000, "f:3", SPEC)["reason"] == "malformed_json"


@pytest.mark.slow
def test_poison_corpus_every_line_stored_or_an_error_row(tmp_path, tiny_model, pg_dsn, table_name, ray_cluster):
    texts = [row["text"] for row in commit_rows(120)]
    corpus = write_poison_corpus(tmp_path / "poison.jsonl", texts)
    address = ray_cluster.get_runtime_context().gcs_address
    args = ["run", str(corpus.path), "--table", table_name, "--model", tiny_model, "--dsn", pg_dsn]
    args += ["--batch-size", "16", "--actors", "1", "--address", address, "--json"]
    result = subprocess.run(
        [sys.executable, "-m", "vectorize.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr == ""  # nothing of Ray's on a normal run
    summary = json.loads(result.stdout)  # exactly one JSON object
    stored = {key for (key,) in query(pg_dsn, "SELECT DISTINCT id FROM {t}", table=table_name)}
    failed = dict(query(pg_dsn, "SELECT id, reason FROM {t}", table=f"{table_name}_errors"))
    assert stored == corpus.stored
    assert failed == corpus.failed
    assert len(stored) + len(failed) == corpus.lines == summary["rows_read"]
    assert summary["duplicate_ids"] == 2 and summary["sanitized"] == len(corpus.sanitized)
    assert summary["failed"] == len(corpus.failed)
    messages = dict(query(pg_dsn, "SELECT reason, message FROM {t}", table=f"{table_name}_errors"))
    assert f"{corpus.path.resolve()}:" in messages["duplicate_id"]  # names where the stored record is

    again = run(corpus.path, table_name, tiny_model, pg_dsn)  # the same stored, the same error rows
    assert (again.embedded, again.unchanged + again.reused, again.duplicate_ids) == (0, len(corpus.stored), 2)
    assert dict(query(pg_dsn, "SELECT id, reason FROM {t}", table=f"{table_name}_errors")) == corpus.failed


def test_a_jira_export_with_hostile_values_is_cleaned_by_the_same_rules():
    from extract.jira import JIRA_METADATA, JIRA_TEMPLATE, flatten_jira_issue

    spec = RecordSpec("id", TextTemplate.parse(JIRA_TEMPLATE), flatten_jira_issue, JIRA_METADATA)
    issues = [
        jira_issue("PLAT-1", "A NUL \u0000 in the summary", "and a lone \ud800 surrogate", []),
        jira_issue("PLAT-2", "fine", adf(paragraph("broken \udfff ADF text")), [], status="x\u0000y"),
        jira_issue("PLAT-3", "an ordinary issue", "nothing odd here", []),
    ]
    prepared = [prepare_json_line(json.dumps(issue), f"search.json[{i}]", spec) for i, issue in enumerate(issues)]
    assert [(row["status"], row["id"], row["sanitized"]) for row in prepared] == [
        (rows.EMBED, "PLAT-1", True), (rows.EMBED, "PLAT-2", True), (rows.EMBED, "PLAT-3", False),
    ]  # fmt: skip
    assert "\x00" not in prepared[0]["text"] and "\ufffd" in prepared[0]["text"] and "\ufffd" in prepared[1]["text"]
    assert "\\u0000" not in prepared[1]["metadata"]


@pytest.mark.usefixtures("ray_cluster")
def test_a_postgres_source_with_an_absurd_id_and_a_repeated_one(tiny_model, pg_dsn, table_name):
    source = f"{table_name}_src"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {source} (id text, body text)")  # no key: a query may repeat ids
        conn.execute(
            f"INSERT INTO {source} VALUES ('a', 'alpha'), ('b', 'beta'), (repeat('x', 3000), 'long id'),"
            " ('b', 'beta again'), ('c', 'gamma')"
        )
    summary = run(pg_dsn, table_name, tiny_model, pg_dsn, source_table=source, text="body")
    stored = {key for (key,) in query(pg_dsn, "SELECT id FROM {t}", table=table_name)}
    failed = sorted(reason for (reason,) in query(pg_dsn, "SELECT reason FROM {t}", table=f"{table_name}_errors"))
    assert stored == {"a", "b", "c"} and failed == ["duplicate_id", "id_too_long"]
    assert summary.rows_read == 5
