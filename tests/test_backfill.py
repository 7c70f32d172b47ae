"""Backfill in place: vectors written into a column of the source table itself."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

from tests.helpers import run
from tests.test_sql_source import make_issues_table
from vectorize.errors import ConfigError, ModelMismatchError
from vectorize.text import content_hash

pytestmark = pytest.mark.usefixtures("ray_cluster")
TEXT = "{title}\n\n{body}"


def column_state(dsn: str, table: str) -> dict[str, tuple[np.ndarray | None, str | None]]:
    with psycopg.connect(dsn) as conn:
        register_vector(conn)
        found = conn.execute(f"SELECT id::text, embedding, embedding_sha256 FROM {table}").fetchall()
    return {key: (None if v is None else v.to_numpy().copy(), digest) for key, v, digest in found}


def backfill(dsn: str, source_table: str, model: str, **options):
    return run(dsn, "", model, None, source_table=source_table, text=TEXT, dest="column", **options)


def test_null_rows_are_filled_changed_ones_refreshed_others_untouched_and_other_vectors_refused(
    tiny_model, other_tiny_model, pg_dsn, table_name
):
    src = f"{table_name}_src"
    make_issues_table(pg_dsn, src, 30)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"UPDATE {src} SET body = NULL WHERE id = 5")
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")  # this may be the suite's first use of pgvector
        conn.execute(f"ALTER TABLE {src} ADD COLUMN small vector(8)")
    with pytest.raises(ConfigError, match=r"column t_\w+_src.small is vector\(8\); this model gives vector\(32\)"):
        backfill(pg_dsn, src, tiny_model, column="small")
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE {src} DROP COLUMN small")
    first = backfill(pg_dsn, src, tiny_model)
    assert (first.embedded, first.failed, first.failed_by_reason) == (29, 1, {"null_text": 1})
    state = column_state(pg_dsn, src)
    assert state["5"] == (None, None)
    assert state["12"][1] == content_hash("issue 12\n\nbody of issue 12 about topic 3")
    assert all(v is not None and v.shape == (32,) for k, (v, _) in state.items() if k != "5")

    again = backfill(pg_dsn, src, tiny_model)
    assert (again.embedded, again.unchanged, again.failed) == (0, 29, 1)

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"UPDATE {src} SET body = 'rewritten' WHERE id IN (7, 8)")
        conn.execute(f"UPDATE {src} SET embedding = NULL WHERE id = 9")
        conn.execute(f"UPDATE {src} SET body = 'now there is one' WHERE id = 5")
    third = backfill(pg_dsn, src, tiny_model)
    assert (third.embedded, third.unchanged, third.failed) == (4, 26, 0)
    after = column_state(pg_dsn, src)
    for key in set(state) - {"5", "7", "8", "9"}:
        assert after[key][0].tobytes() == state[key][0].tobytes()
    assert after["7"][1] == content_hash("issue 7\n\nrewritten")
    assert not np.array_equal(after["7"][0], state["7"][0])
    assert after["5"][0] is not None

    with pytest.raises(ModelMismatchError, match=r"column t_\w+_src.embedding holds vectors of .*another --column"):
        backfill(pg_dsn, src, other_tiny_model)


@pytest.mark.parametrize(
    ("source", "options", "message"),
    [
        ("rows.jsonl", {}, "give postgresql://... --source-table"),
        ("{dsn}", {"long_text": "chunk"}, "one vector per row"),
        ("{dsn}", {"sync": True}, "drop --sync"),
    ],
)
def test_backfill_needs_a_source_table(tiny_model, pg_dsn, table_name, source, options, message):
    make_issues_table(pg_dsn, f"{table_name}_src", 3)
    with pytest.raises(ConfigError, match=message):
        run(
            source.format(dsn=pg_dsn), "", tiny_model, None, source_table=f"{table_name}_src", text=TEXT,
            dest="column", **options,
        )  # fmt: skip
