"""How a collection stores, indexes and searches its vectors: halfvec past 2,000 dimensions, a
binary-quantized index, filters that still return k, keyword and hybrid search, and storage
fixed by a collection's first run."""

from __future__ import annotations

import json

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

from jobs.check import check_collection
from tests.corpus import write_jsonl
from tests.helpers import query, run, stored
from tests.openai_server import vector_for
from tests.test_openai_job import remote, run_remote, short_rows
from vectorize.cli import main as cli_main
from vectorize.errors import ConfigError
from vectorize.identity import ModelIdentity
from vectorize.models import read_identity
from vectorize.search import search
from vectorize.store.collection import Collection
from vectorize.store.finishing import build_vector_index
from vectorize.store.registry import prepare_collection
from vectorize.store.storage import Storage, StorageRequest, storage_for
from vectorize.text import content_hash

pytestmark = pytest.mark.usefixtures("ray_cluster")


def _column_and_index(dsn: str, table: str) -> tuple[str, str]:
    column = query(
        dsn,
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = to_regclass(%s) "
        "AND attname = 'embedding'",
        table,
    )[0][0]
    (index,) = query(dsn, "SELECT indexdef FROM pg_indexes WHERE indexname = %s", f"{table}_embedding_hnsw")[0]
    return column, index


def test_a_3072_dimension_model_is_stored_as_halfvec_indexed_searched_and_checked(
    tmp_path, pg_dsn, table_name, openai_server, capsys
):
    rows = short_rows(40)
    source = write_jsonl(tmp_path / "c.jsonl", rows)
    settings = remote(openai_server, model="text-embedding-3-large")
    summary = run_remote(source, table_name, pg_dsn, settings)
    assert (summary.embedded + summary.reused, summary.failed) == (40, 0)

    column, index = _column_and_index(pg_dsn, table_name)
    assert column == "halfvec(3072)" and "halfvec_cosine_ops" in index
    for text, vector in stored(pg_dsn, table_name).values():
        expected = vector_for(text, 3072)
        cosine = float(vector @ expected / (np.linalg.norm(vector) * np.linalg.norm(expected)))
        assert cosine > 0.9999  # half precision keeps the direction
    (recorded,) = query(pg_dsn, "SELECT provider FROM vectorize_collections WHERE collection = %s", table_name)[0]
    assert recorded["base_url"] == openai_server.base_url and "api_key" not in json.dumps(recorded)

    # the collection remembers its provider: the key is all a search needs
    wanted = rows[7]["text"][:60]
    args = ["search", wanted, "--table", table_name, "--dsn", pg_dsn, "--json", "-k", "3"]
    assert cli_main([*args, "--api-key", openai_server.state.api_key]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["id"] == rows[7]["id"] and hits[0]["similarity"] > 0.999

    report = check_collection(pg_dsn, table_name, sample=10)
    assert report.figures.rows == 40 and report.figures.wrong_dims == 0


def test_a_model_too_wide_for_the_asked_index_is_refused_before_any_embedding(
    tmp_path, pg_dsn, table_name, openai_server
):
    source = write_jsonl(tmp_path / "c.jsonl", short_rows(20))
    settings = remote(openai_server, model="text-embedding-3-large")
    with pytest.raises(ConfigError, match="at most 2000: use --vector-type halfvec"):
        run_remote(source, table_name, pg_dsn, settings, vector_type="vector")
    assert openai_server.state.requests <= 1  # the probe that told the dimensions, nothing embedded
    assert query(pg_dsn, "SELECT to_regclass(%s)", table_name)[0][0] is None


def test_storage_other_than_the_collections_is_refused(tmp_path, pg_dsn, table_name, tiny_model):
    prepare_collection(pg_dsn, Collection(table_name), read_identity(tiny_model), "tests")
    source = write_jsonl(tmp_path / "c.jsonl", [{"id": "a", "text": "alpha"}])
    for option, value in (("vector_type", "halfvec"), ("index", "none"), ("hnsw_m", 32)):
        with pytest.raises(ConfigError, match=f"--{option.replace('_', '-')} {value} \\(it has "):
            run(source, table_name, tiny_model, pg_dsn, **{option: value})
    assert run(source, table_name, tiny_model, pg_dsn, vector_type="vector", index="hnsw").embedded == 1
    with pytest.raises(ConfigError, match="--text-search 'klingon': this database has no such configuration"):
        prepare_collection(pg_dsn, Collection(f"{table_name}_k"), read_identity(tiny_model), "tests",
                           StorageRequest(text_search="klingon"))  # fmt: skip


def test_a_collection_without_keyword_search_is_searched_by_vector_and_refuses_words(
    tmp_path, pg_dsn, table_name, tiny_model, capsys
):
    texts = ["the parser drops empty headers", "retry the upload after a reset", "rename the config flag"]
    source = write_jsonl(tmp_path / "n.jsonl", [{"id": f"n{i}", "text": t} for i, t in enumerate(texts)])
    assert run(source, table_name, tiny_model, pg_dsn, text_search="none").embedded == 3
    columns = query(pg_dsn, "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s)", table_name)
    indexes = query(pg_dsn, "SELECT indexname FROM pg_indexes WHERE tablename = %s", table_name)
    assert "text_search" not in {c for (c,) in columns} and "embedding" in {c for (c,) in columns}
    assert not [i for (i,) in indexes if "text_search" in i] and f"{table_name}_metadata_idx" in {i for (i,) in indexes}
    search_cli = ["search", texts[1], "--table", table_name, "--dsn", pg_dsn, "--json"]
    assert cli_main(search_cli) == 0
    assert json.loads(capsys.readouterr().out)[0]["id"] == "n1"
    for mode in ("keyword", "hybrid"):
        assert cli_main([*search_cli, "--mode", mode]) == 2
        err = capsys.readouterr().err.strip()
        assert err == (
            f"vectorize: error: collection {table_name!r} was made without keyword search (--text-search none): "
            f"search it with --mode vector, or add the keyword index with `vectorize migrate --table {table_name} "
            "--text-search simple`"
        )
    with pytest.raises(ConfigError, match="--text-search simple \\(it has none\\)"):
        run(source, table_name, tiny_model, pg_dsn, text_search="simple")
    assert run(source, table_name, tiny_model, pg_dsn, text_search="none").unchanged == 3


@pytest.mark.parametrize(
    ("requested", "dims", "message"),
    [
        (StorageRequest(), 16_001, "holds at most 16000"),
        (StorageRequest(vector_type="halfvec"), 4_001, "at most 4000: use --index hnsw-bq"),
        (StorageRequest(vector_type="vector"), 2_001, "at most 2000: use --vector-type halfvec"),
    ],
)
def test_dimensions_that_fit_no_index_are_refused(requested, dims, message):
    with pytest.raises(ConfigError, match=message):
        storage_for(requested, None, dims, "c")


def test_defaults_fit_the_model():
    assert storage_for(StorageRequest(), None, 384, "c") == Storage()
    assert storage_for(StorageRequest(), None, 3072, "c").vector_type == "halfvec"
    assert storage_for(StorageRequest(index="hnsw-bq"), None, 8000, "c").index == "hnsw-bq"
    assert storage_for(StorageRequest(), Storage(vector_type="halfvec"), 384, "c").vector_type == "halfvec"


def planted_identity(dimensions: int) -> ModelIdentity:
    return ModelIdentity(
        name="planted", revision="planted", dimensions=dimensions, normalized=True, prefix="", max_tokens=128
    )


def _unit(rng: np.random.Generator, dims: int) -> np.ndarray:
    v = rng.standard_normal(dims)
    return (v / np.linalg.norm(v)).astype(np.float32)


def _planted(dsn: str, table: str, storage: StorageRequest, rows: list[tuple[str, str, dict, np.ndarray]]) -> Storage:
    """A collection of the given (id, text, metadata, vector) rows, indexed as a run leaves it."""
    dims = len(rows[0][3])
    identity = planted_identity(dims)
    collection = Collection(table)
    chosen = prepare_collection(dsn, collection, identity, "tests", storage)
    with psycopg.connect(dsn, autocommit=True) as conn:
        register_vector(conn)
        with conn.cursor() as cur:
            cur.executemany(
                f'INSERT INTO "{table}" (id, text, text_sha256, model, embedding, metadata) '
                "VALUES (%s, %s, %s, %s, %s, %s::jsonb)",
                [(i, t, content_hash(t), identity.key, v, json.dumps(m)) for i, t, m, v in rows],
            )
        build_vector_index(conn, collection, chosen, dims)
    return chosen


def test_a_binary_quantized_index_finds_a_stored_text_first(pg_dsn, table_name):
    rng = np.random.default_rng(3)
    rows = [(f"r{i}", f"text {i}", {}, _unit(rng, 64)) for i in range(500)]
    _planted(pg_dsn, table_name, StorageRequest(index="hnsw-bq"), rows)
    assert "binary_quantize" in _column_and_index(pg_dsn, table_name)[1]
    identity = planted_identity(64)
    with psycopg.connect(pg_dsn) as conn:
        register_vector(conn)
        for wanted in (0, 123, 499):
            near = rows[wanted][3] + 0.05 * _unit(rng, 64)
            hits = search(conn, table_name, near, 5, identity)
            assert hits[0].id == f"r{wanted}" and len(hits) == 5


def test_a_filter_matched_by_two_percent_of_rows_still_returns_k(pg_dsn, table_name):
    rng = np.random.default_rng(5)
    rows = [(f"r{i}", f"text {i}", {"team": "rare" if i % 50 == 0 else "common"}, _unit(rng, 64)) for i in range(5000)]
    _planted(pg_dsn, table_name, StorageRequest(), rows)
    identity = planted_identity(64)
    with psycopg.connect(pg_dsn) as conn:
        register_vector(conn)
        rare = [(row_id, vector) for row_id, _, meta, vector in rows if meta["team"] == "rare"]
        for _ in range(5):
            asked = _unit(rng, 64)
            hits = search(conn, table_name, asked, 10, identity, {"team": "rare"})
            assert len(hits) == 10 and {h.metadata["team"] for h in hits} == {"rare"}
            assert [h.similarity for h in hits] == sorted((h.similarity for h in hits), reverse=True)
            nearest_rare = sorted(rare, key=lambda row: -float(row[1] @ asked))[:10]  # few match: answered exactly
            assert [h.id for h in hits] == [row_id for row_id, _ in nearest_rare]
            common = search(conn, table_name, asked, 10, identity, {"team": "common"})
            assert len(common) == 10 and {h.metadata["team"] for h in common} == {"common"}
        assert search(conn, table_name, _unit(rng, 64), 10, identity, {"team": "nobody"}) == []


def test_hybrid_search_puts_an_exact_identifier_the_vectors_miss_first(pg_dsn, table_name):
    rng = np.random.default_rng(11)
    asked = _unit(rng, 64)
    rows = [(f"r{i}", f"connection reset while paging results {i}", {}, _unit(rng, 64)) for i in range(300)]
    rows.append(("wanted", "crash in parse_header_v2 when the header is empty", {}, -asked))  # the farthest vector
    _planted(pg_dsn, table_name, StorageRequest(), rows)
    identity = planted_identity(64)
    with psycopg.connect(pg_dsn) as conn:
        register_vector(conn)
        by_vector = search(conn, table_name, asked, 10, identity, mode="vector", words="parse_header_v2")
        assert "wanted" not in [h.id for h in by_vector]
        by_words = search(conn, table_name, asked, 10, identity, mode="keyword", words="parse_header_v2")
        assert [h.id for h in by_words] == ["wanted"]
        hybrid = search(conn, table_name, asked, 10, identity, mode="hybrid", words="parse_header_v2")
        assert hybrid[0].id == "wanted" and len(hybrid) == 10
        assert hybrid[0].similarity == pytest.approx(-1.0, abs=1e-5)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--filter", "team"], "--filter 'team': give key=value, like --filter author=ann"),
        (["--mode", "fuzzy"], "--mode 'fuzzy': choose vector, keyword, hybrid"),
        (["-k", "0"], "-k must be from 1 to 1000"),
    ],
)
def test_a_bad_search_option_is_one_line_and_exit_2(options, message, capsys):
    assert cli_main(["search", "q", "--table", "anything", *options]) == 2
    assert capsys.readouterr().err.strip() == f"vectorize: error: {message}"
