"""``vectorize check`` against a collection with planted flaws in the real Postgres."""

from __future__ import annotations

import json

import pytest

from tests.planted import Planted, plant_collection
from vectorize.cli import main
from vectorize.models import read_identity

PLAN = Planted()


@pytest.fixture
def planted(pg_dsn, tiny_model, table_name) -> str:
    plant_collection(pg_dsn, table_name, read_identity(tiny_model), PLAN)
    return table_name


def check_json(capsys, *args: str) -> tuple[int, dict]:
    code = main(["check", *args, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_check_counts_every_planted_flaw_and_fails_on_the_default_limits(ray_cluster, pg_dsn, planted, capsys):
    code, report = check_json(capsys, "--table", planted, "--dsn", pg_dsn, "--sample", "1000")
    figures = report["figures"]
    assert figures["rows"] == PLAN.rows
    assert figures["zero"] == PLAN.zero
    assert figures["non_finite"] == 0
    assert figures["wrong_dims"] == 0
    assert figures["off_norm"] == PLAN.off_norm
    assert (figures["duplicate_vector_groups"], figures["duplicate_vector_rows"]) == (2, 4)
    assert (figures["identical_text_groups"], figures["identical_text_rows"]) == (1, PLAN.identical_text_ids)
    assert figures["other_model"] == PLAN.other_model
    assert figures["missing_by_reason"] == {"empty_text": 2, "provider_error": 1, "pending_reuse": 1}
    assert figures["errors_by_reason"] == {"empty_text": 2, "provider_error": 2}
    assert sum(report["norm_histogram"]["counts"]) == PLAN.rows
    # every row with a vector was sampled; each near pair and duplicate vector has its twin
    neighbours = report["neighbours"]
    assert neighbours["sampled"] == PLAN.rows - PLAN.zero
    assert neighbours["near_duplicates"] == 4 + 2
    assert code == 1 and report["passed"] is False
    assert set(report["failed"]) == {
        "zero_vectors",
        "off_norm",
        "duplicate_vectors",
        "other_model",
        "coverage",
        "score",
    }
    problems = PLAN.zero + PLAN.off_norm + 4 + PLAN.other_model
    assert report["score"] == pytest.approx(100 * (PLAN.rows - problems) / (PLAN.rows + PLAN.missing), abs=0.01)


def test_check_limits_make_it_pass_or_fail_as_set(ray_cluster, pg_dsn, planted, capsys):
    loose = [
        "--max-zero", "3", "--max-off-norm", "2", "--max-duplicate-vectors", "4", "--max-other-model", "1",
        "--min-coverage", "0.9", "--min-score", "65", "--max-near-duplicate-rate", "0.25",
    ]  # fmt: skip
    code, report = check_json(capsys, "--table", planted, "--dsn", pg_dsn, *loose)
    assert (code, report["passed"], report["failed"]) == (0, True, [])
    # one less allowed on each: each fails alone
    for option, value, name in (
        ("--max-zero", "2", "zero_vectors"),
        ("--max-identical-texts", "2", "identical_texts"),
        ("--max-near-duplicate-rate", "0.1", "near_duplicate_rate"),
        ("--min-score", "68", "score"),
    ):
        code, report = check_json(capsys, "--table", planted, "--dsn", pg_dsn, *loose, option, value)
        assert (code, report["failed"]) == (1, [name]), option
    # the text form names each failed check
    assert main(["check", "--table", planted, "--dsn", pg_dsn, *loose, "--max-zero", "0", "--sample", "0"]) == 1
    out = capsys.readouterr().out
    assert "FAIL zero_vectors" in out and "FAILED: score" in out and "near_duplicate_rate" not in out


def test_check_refuses_an_unknown_collection_and_an_empty_one(pg_dsn, tiny_model, table_name, capsys):
    from vectorize.store.collection import Collection
    from vectorize.store.registry import prepare_collection

    assert main(["check", "--table", "no_such_collection", "--dsn", pg_dsn]) == 2
    assert "no collection 'no_such_collection'" in capsys.readouterr().err
    prepare_collection(pg_dsn, Collection(table_name), read_identity(tiny_model), "tests")
    assert main(["check", "--table", table_name, "--dsn", pg_dsn]) == 2
    assert f"collection {table_name!r} holds no vectors yet" in capsys.readouterr().err
    assert main(["check", "--table", table_name, "--dsn", pg_dsn, "--min-coverage", "-1"]) == 2
    assert "--min-coverage cannot be negative" in capsys.readouterr().err
