"""A Postgres table or query as the source, in the suite's own Postgres."""

from __future__ import annotations

import psycopg
import pytest

from extract.sources import open_source
from tests.helpers import errors, query, run
from vectorize.errors import DatabaseConfigError, SourceError

pytestmark = pytest.mark.usefixtures("ray_cluster")


def make_issues_table(dsn: str, name: str, count: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {name}")
        conn.execute(
            f"""CREATE TABLE {name} (id bigint PRIMARY KEY, title text, body text, votes int,
                opened timestamptz NOT NULL DEFAULT '2024-01-02T03:04:05Z', owner uuid)"""
        )
        conn.execute(
            f"""INSERT INTO {name} (id, title, body, votes, owner)
                SELECT i, 'issue ' || i, 'body of issue ' || i || ' about topic ' || (i %% 9), i %% 5,
                       '6f1c1d3e-0000-4000-8000-000000000001'
                FROM generate_series(1, %s) AS i""",
            (count,),
        )


def test_table_rows_are_read_in_shards_each_once(pg_dsn, table_name):
    make_issues_table(pg_dsn, f"{table_name}_src", 300)
    plan = open_source(pg_dsn, source_table=f"{table_name}_src", id_field="id")
    assert plan.fields == ("id", "title", "body", "votes", "opened", "owner")
    dataset = plan.sql.read(0.25, shards=4).materialize()
    assert dataset.num_blocks() == 4
    ids = sorted(int(row["_pos"]) for row in dataset.iter_rows())
    assert ids == list(range(1, 301))


def test_table_source_runs_with_template_typed_metadata_and_md5_fingerprints(tiny_model, pg_dsn, table_name):
    source_table = f"{table_name}_src"
    make_issues_table(pg_dsn, source_table, 40)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"UPDATE {source_table} SET body = NULL WHERE id = 7")
        # json has no hash function: the rows' fingerprints fall back to md5 of their text form
        conn.execute(f"""ALTER TABLE {source_table} ADD COLUMN extra json""")
        conn.execute(f"""UPDATE {source_table} SET extra = '{{"k": 1}}' WHERE id = 12""")
    assert open_source(pg_dsn, source_table=source_table).sql.row_hash.startswith("md5")
    options = {"source_table": source_table, "text": "{title}\n\n{body}"}
    summary = run(pg_dsn, table_name, tiny_model, pg_dsn, **options)
    assert (summary.rows_read, summary.embedded, summary.failed) == (40, 39, 1)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"""UPDATE {source_table} SET extra = '{{"k": 2}}' WHERE id = 12""")
    again = run(pg_dsn, table_name, tiny_model, pg_dsn, **options)  # the md5 fingerprint of row 12 changed
    assert (again.rows_read, again.embedded, again.refreshed, again.unchanged, again.failed) == (40, 0, 1, 39, 1)
    assert errors(pg_dsn, table_name)["7"][0] == "null_text"
    text, metadata = query(pg_dsn, "SELECT text, metadata FROM {t} WHERE id = '12'", table=table_name)[0]
    assert text == "issue 12\n\nbody of issue 12 about topic 3"
    assert metadata == {
        "votes": 2,
        "opened": "2024-01-02T03:04:05+00:00",
        "owner": "6f1c1d3e-0000-4000-8000-000000000001",
        "extra": {"k": 2},
    }
    history = query(pg_dsn, "SELECT source FROM vectorize_runs WHERE run_id = %s", summary.run_id)[0][0]
    assert "password" not in history and "table " + source_table in history


def test_query_source_and_a_non_text_column_as_text(tiny_model, pg_dsn, table_name):
    source_table = f"{table_name}_src"
    make_issues_table(pg_dsn, source_table, 20)
    summary = run(
        pg_dsn,
        table_name,
        tiny_model,
        pg_dsn,
        query=f"SELECT id, title FROM {source_table} WHERE id <= 10",
        text="title",
    )
    assert (summary.rows_read, summary.embedded) == (10, 10)
    wrong = run(pg_dsn, f"{table_name}_b", tiny_model, pg_dsn, source_table=source_table, text="{votes}")
    assert (wrong.embedded, wrong.failed, wrong.failed_by_reason) == (0, 20, {"not_a_string": 20})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"source_table": "no_such_table"}, "the source table 'no_such_table' does not exist"),
        (
            {"source_table": "{src}", "text": "missing"},
            r"field 'missing' is not in the source .* table t_\w+_src \(its fields: id, title, body",
        ),
        ({"source_table": "{src}", "id_field": "key"}, "field 'key' is not in the source"),
        ({"query": "SELECT id, nope FROM {src}"}, 'the --query cannot be read: column "nope" does not exist'),
        ({}, "needs --source-table TABLE or --query"),
        ({"source_table": "{src}", "query": "SELECT 1"}, "needs --source-table TABLE or --query"),
    ],
)
def test_bad_source_is_one_line_before_any_embedding(tiny_model, pg_dsn, table_name, options, message):
    make_issues_table(pg_dsn, f"{table_name}_src", 5)
    options = {k: v.format(src=f"{table_name}_src") for k, v in options.items()}
    options.setdefault("text", "title")
    with pytest.raises(SourceError, match=message):
        run(pg_dsn, table_name, tiny_model, pg_dsn, **options)
    assert query(pg_dsn, "SELECT to_regclass(%s)", table_name) == [(None,)]


def test_unreachable_source_database_hides_its_password(tiny_model, pg_dsn, table_name):
    with pytest.raises(DatabaseConfigError, match=r"cannot connect to the source database .*:\*\*\*@") as caught:
        run("postgresql://me:s3cret@127.0.0.1:1/db", table_name, tiny_model, pg_dsn, source_table="t", text="x")
    assert "s3cret" not in str(caught.value)
