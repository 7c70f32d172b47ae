"""The whole job against a real Ray and a real Postgres + pgvector, with the tiny model."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.corpus import commit_rows, write_jsonl
from tests.helpers import errors, query, run, stored
from vectorize.errors import ModelMismatchError
from vectorize.settings import RunSettings
from vectorize.text import clean_text, content_hash

pytestmark = pytest.mark.usefixtures("ray_cluster")


def test_every_row_is_stored_once_with_its_hash_and_metadata(tmp_path, tiny_model, pg_dsn, table_name):
    rows = commit_rows(60)
    summary = run(write_jsonl(tmp_path / "c.jsonl", rows), table_name, tiny_model, pg_dsn, actors=None)
    distinct_texts = len({clean_text(r["text"]) for r in rows})
    assert (summary.rows_read, summary.failed) == (60, 0)
    assert summary.embedded == distinct_texts
    assert summary.embedded + summary.reused == 60
    got = query(pg_dsn, "SELECT id, text, text_sha256, metadata, vector_dims(embedding) FROM {t}", table=table_name)
    assert len(got) == 60
    by_id = {r["id"]: r for r in rows}
    for key, text, digest, metadata, dims in got:
        assert text == clean_text(by_id[key]["text"])
        assert digest == content_hash(text)
        assert metadata == {"author": by_id[key]["author"], "date": by_id[key]["date"]}
        assert dims == 32
    assert (
        query(pg_dsn, "SELECT count(*) FROM pg_indexes WHERE indexname = %s", f"{table_name}_embedding_hnsw")[0][0] == 1
    )
    history = query(
        pg_dsn, "SELECT status, rows_read, embedded, failed FROM vectorize_runs WHERE run_id = %s", summary.run_id
    )
    assert history == [("succeeded", 60, summary.embedded, 0)]


def test_known_texts_are_reused_a_rerun_embeds_nothing_and_three_edits_embed_three(
    tmp_path, tiny_model, pg_dsn, table_name
):
    rows = [{"id": f"r{i}", "text": f"row number {i} about topic {i % 7}"} for i in range(40)]
    rows += [{"id": f"d{i}", "text": "the very same message"} for i in range(10)]
    source = write_jsonl(tmp_path / "rows.jsonl", rows)
    # batches of 4: the ten copies of one text arrive in different batches
    first = run(source, table_name, tiny_model, pg_dsn, batch_size=4)
    assert (first.embedded, first.reused, first.failed) == (41, 9, 0)
    before = stored(pg_dsn, table_name)
    assert len(before) == 50
    assert all(np.array_equal(before[f"d{i}"][1], before["d0"][1]) for i in range(10))

    again = run(source, table_name, tiny_model, pg_dsn)
    assert (again.embedded, again.unchanged, again.reused, again.failed) == (0, 50, 0, 0)

    for i in (3, 17, 31):
        rows[i]["text"] += " (edited)"
    rows.append({"id": "twin", "text": rows[5]["text"]})  # a new id whose text is stored already
    write_jsonl(source, rows)
    edited = run(source, table_name, tiny_model, pg_dsn)
    assert (edited.embedded, edited.unchanged, edited.reused) == (3, 47, 1)
    after = stored(pg_dsn, table_name)
    changed = {key for key in before if not np.array_equal(after[key][1], before[key][1])}
    assert changed == {"r3", "r17", "r31"}
    assert after["r17"][0].endswith("(edited)")
    assert np.array_equal(after["twin"][1], before["r5"][1])


def test_bad_rows_go_to_the_errors_table_the_rest_are_stored_and_a_fixed_row_leaves_it(
    tmp_path, tiny_model, pg_dsn, table_name
):
    good = [{"id": f"g{i}", "title": f"title {i}", "body": f"body {i}"} for i in range(20)]
    bad_lines = [
        '{"id": "m1", "title": "broken',
        json.dumps({"title": "no id", "body": "x"}),
        json.dumps({"id": "e1", "title": "", "body": "  "}),
        json.dumps({"id": "n1", "title": "num", "body": 12}),
        json.dumps({"id": "x1", "title": "missing body"}),
        "[1, 2, 3]",
    ]
    source = write_jsonl(tmp_path / "mixed.jsonl", good, bad_lines)
    summary = run(source, table_name, tiny_model, pg_dsn, text="{title}\\n\\n{body}")
    assert summary.rows_read == 26
    assert summary.embedded == 20
    assert summary.failed_by_reason == {
        "malformed_json": 1,
        "missing_id": 1,
        "empty_text": 1,
        "not_a_string": 1,
        "missing_text": 1,
        "not_an_object": 1,
    }
    assert set(stored(pg_dsn, table_name)) == {f"g{i}" for i in range(20)}
    failed = errors(pg_dsn, table_name)
    assert failed[f"{source}:21"] == ("malformed_json", bad_lines[0])
    assert failed[f"{source}:22"][0] == "missing_id"
    assert failed["e1"][0] == "empty_text"
    assert failed["n1"][0] == "not_a_string"
    assert failed["x1"][0] == "missing_text"
    assert failed[f"{source}:26"] == ("not_an_object", "[1, 2, 3]")

    fixed_line = json.dumps({"id": "e1", "title": "now it has", "body": "words"})  # the empty row, fixed
    write_jsonl(source, good, [fixed_line if '"e1"' in line else line for line in bad_lines])
    fixed = run(source, table_name, tiny_model, pg_dsn, text="{title}\\n\\n{body}")
    assert (fixed.embedded, fixed.unchanged) == (1, 20)
    assert set(errors(pg_dsn, table_name)) == set(failed) - {"e1"}
    assert "e1" in stored(pg_dsn, table_name)


def test_a_write_task_retried_by_ray_leaves_no_duplicates(tmp_path, tiny_model, pg_dsn, table_name):
    """The fault comes from outside the shipped code: a target whose sink's first write task
    ends its process just after its rows are committed, so Ray runs the task again."""
    from jobs.plan import plan_run
    from jobs.runner import execute
    from jobs.sink import PgvectorDatasink
    from jobs.targets import CollectionRun, CollectionTarget

    marker = str(tmp_path / "write-died")

    class DiesAfterItsFirstCommit(PgvectorDatasink):
        def write(self, blocks, ctx):
            written = super().write(blocks, ctx)
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return written
            os._exit(1)

    class DyingRun(CollectionRun):
        def stage(self, summary, claims):
            prepare, context, sink = super().stage(summary, claims)
            return prepare, context, DiesAfterItsFirstCommit(sink.dsn, sink.spec, meter=claims)

    @dataclass(frozen=True)
    class DyingTarget(CollectionTarget):
        def begin(self, store, inputs, summary):
            run = super().begin(store, inputs, summary)
            return DyingRun(**vars(run))

    rows = [{"id": f"w{i}", "text": f"write retry row {i}"} for i in range(48)]
    source = write_jsonl(tmp_path / "w.jsonl", rows)
    settings = RunSettings.of(source=str(source), table=table_name, model=tiny_model, dsn=pg_dsn, batch_size=16,
                           actors=(1, 1))  # fmt: skip
    plan = plan_run(settings)
    summary = execute(replace(plan, target=DyingTarget(**vars(plan.target))))
    assert os.path.exists(marker), "the write task was not killed, so nothing was retried"
    assert summary.failed == 0
    got = query(pg_dsn, "SELECT id, count(*) FROM {t} GROUP BY id", table=table_name)
    assert len(got) == 48 and all(count == 1 for _, count in got)


def test_parquet_and_csv_sources(tmp_path, tiny_model, pg_dsn, table_name):
    rows = [{"id": i, "text": f"columnar row {i}", "score": i / 2} for i in range(10)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "rows.parquet")
    summary = run(tmp_path / "rows.parquet", table_name, tiny_model, pg_dsn)
    assert (summary.embedded, summary.failed) == (10, 0)
    meta = dict(query(pg_dsn, "SELECT id, metadata FROM {t}", table=table_name))
    assert meta["3"] == {"score": 1.5}

    (tmp_path / "csvdir").mkdir()
    (tmp_path / "csvdir" / "a.csv").write_text("key,body\nk1,first csv row\nk2,second csv row\n")
    summary = run(tmp_path / "csvdir", table_name + "_csv", tiny_model, pg_dsn, id_field="key", text="body")
    assert summary.embedded == 2
    assert set(stored(pg_dsn, table_name + "_csv")) == {"k1", "k2"}


def test_long_texts_are_truncated_and_counted_and_another_model_is_refused(
    tmp_path, tiny_model, other_tiny_model, pg_dsn, table_name
):
    long_text = " ".join(f"word{i}" for i in range(400))
    source = write_jsonl(tmp_path / "long.jsonl", [{"id": "long", "text": long_text}, {"id": "short", "text": "tiny"}])
    summary = run(source, table_name, tiny_model, pg_dsn, long_text="truncate")
    assert (summary.embedded, summary.truncated) == (2, 1)
    assert summary.tokens > 400

    runs_before = query(pg_dsn, "SELECT count(*) FROM vectorize_runs")[0][0]
    with pytest.raises(ModelMismatchError, match="Use another --table"):
        run(source, table_name, other_tiny_model, pg_dsn, long_text="truncate")
    assert query(pg_dsn, "SELECT count(*) FROM vectorize_runs")[0][0] == runs_before
