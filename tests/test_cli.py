"""The command line: one clear line and exit 2 for every configuration error, no traceback."""

from __future__ import annotations

import json

import pytest

from tests.corpus import write_jsonl
from tests.helpers import cli_error_lines
from vectorize.cli import main


@pytest.fixture
def source(tmp_path):
    return write_jsonl(tmp_path / "ok.jsonl", [{"id": "a", "title": "hello", "body": "world"}])


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("vectorize: error: ")
    return err[0]


def test_unreadable_path(capsys, tmp_path, pg_dsn):
    assert main(["run", str(tmp_path / "missing.jsonl"), "--table", "t", "--dsn", pg_dsn]) == 2
    assert "no such file or directory" in _error_line(capsys)


def test_unknown_file_type(capsys, tmp_path, pg_dsn):
    (tmp_path / "notes.txt").write_text("x")
    assert main(["run", str(tmp_path / "notes.txt"), "--table", "t", "--dsn", pg_dsn]) == 2
    assert "unknown file type" in _error_line(capsys)


def test_field_missing_from_the_whole_source(capsys, source, pg_dsn):
    assert main(["run", str(source), "--table", "t", "--text", "{titel}", "--dsn", pg_dsn]) == 2
    line = _error_line(capsys)
    assert "'titel'" in line and "id, title, body" in line


def test_missing_id_field(capsys, source, pg_dsn):
    assert main(["run", str(source), "--table", "t", "--id-field", "key", "--text", "title", "--dsn", pg_dsn]) == 2
    assert "'key'" in _error_line(capsys)


def test_bad_dsn_names_the_server_but_not_the_password(capsys, source):
    dsn = "postgresql://someone:hunter2secret@127.0.0.1:1/nodb"
    assert main(["run", str(source), "--table", "t", "--text", "title", "--dsn", dsn]) == 2
    line = _error_line(capsys)
    assert "cannot connect" in line and "127.0.0.1" in line
    assert "hunter2secret" not in line


def test_unknown_model(capsys, source, pg_dsn):
    assert (
        main(["run", str(source), "--table", "t", "--text", "title", "--model", "no/such-model", "--dsn", pg_dsn]) == 2
    )
    assert "unknown model 'no/such-model'" in _error_line(capsys)


def test_bad_table_name(capsys, source, pg_dsn):
    assert main(["run", str(source), "--table", "Robert'); DROP", "--dsn", pg_dsn]) == 2
    assert "--table" in _error_line(capsys)


def test_a_ray_client_run_without_a_database_the_cluster_can_reach_is_refused(capsys, source, monkeypatch):
    monkeypatch.delenv("VECTORIZE_DSN", raising=False)
    assert main(["run", str(source), "--table", "t", "--text", "title", "--address", "ray://head:10001"]) == 2
    line = _error_line(capsys)
    assert "ray://head:10001" in line and "--dsn" in line and "embedded" in line


def test_search_of_an_unknown_collection(capsys, pg_dsn):
    assert main(["search", "anything", "--table", "never_made", "--dsn", pg_dsn]) == 2
    assert "no collection 'never_made'" in _error_line(capsys)


def test_error_from_a_fresh_process_is_one_line_without_traceback(tmp_path):
    assert cli_error_lines("run", str(tmp_path / "nope.jsonl"), "--table", "t") == [
        f"vectorize: error: cannot read {tmp_path / 'nope.jsonl'}: no such file or directory"
    ]


@pytest.mark.usefixtures("ray_cluster")
def test_run_then_search_prints_json(capsys, tmp_path, tiny_model, pg_dsn, table_name):
    texts = [
        "apples",
        "Rockets launch from the coast every Tuesday morning, weather permitting.",
        "jazz quartet, late set: 11pm; tickets $20 at the door — cash only!!",
        "tides 🌊 " * 12,
    ]
    rows = [{"id": f"s{i}", "text": text} for i, text in enumerate(texts)]
    source = write_jsonl(tmp_path / "s.jsonl", rows)
    assert main(["run", str(source), "--table", table_name, "--model", tiny_model, "--dsn", pg_dsn, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["rows_read"], summary["embedded"], summary["failed"]) == (4, 4, 0)
    assert main(["search", texts[2], "--table", table_name, "--dsn", pg_dsn, "-k", "2", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 2
    assert hits[0]["id"] == "s2" and hits[0]["similarity"] >= 0.9999
