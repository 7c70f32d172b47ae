"""`vectorize migrate`: a collection moved to another model or storage while searches go on."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector
from psycopg import sql

from jobs.migrate import migrate
from tests.corpus import ROOT, commit_rows, write_jsonl
from tests.helpers import kill_once_stored, query, run
from vectorize.cli import main as cli_main
from vectorize.errors import ConfigError, MigrationError, ModelMismatchError
from vectorize.providers.base import ProviderRequest, embed_blocking, provider_spec
from vectorize.search import search
from vectorize.settings import RunSettings
from vectorize.store.collection import Collection
from vectorize.store.registry import registered

pytestmark = pytest.mark.usefixtures("ray_cluster")


def rows_of(count: int) -> list[dict]:
    return [{"id": r["id"], "text": r["text"][:300]} for r in commit_rows(count)]


def migration(source, table: str, model: str, dsn: str, min_coverage: float = 1.0, **settings):
    settings.setdefault("batch_size", 16)
    settings.setdefault("actors", (1, 1))
    return migrate(RunSettings.of(source=str(source), table=table, model=model, dsn=dsn, **settings), min_coverage)


def models_of(dsn: str, table: str, schema: str = "public") -> set[str]:
    return {m for (m,) in query(dsn, f'SELECT DISTINCT model FROM "{schema}"."{table}"')}


def identity_of(dsn: str, table: str):
    with psycopg.connect(dsn) as conn:
        return registered(conn, Collection(table)).identity


class SearchLoop:
    """Searches one collection without pause, as a client that reads the collection's model and
    embeds its query with it: each answer is checked to come from one model (a stored text found
    by its own vector has a similarity near 1; the two test models' vectors are unrelated)."""

    def __init__(self, dsn: str, table: str, queries: dict[str, list[np.ndarray]]) -> None:
        self.dsn, self.table, self.queries = dsn, table, queries
        self.answers: list[tuple[str, float]] = []  # (model key, best similarity)
        self.failures: list[str] = []
        self.retried = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> SearchLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(60)

    def _loop(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            register_vector(conn)
            turn = 0
            while not self._stop.is_set():
                turn += 1
                self._one(conn, turn)

    def _one(self, conn, turn: int) -> None:
        for _attempt in range(2):
            identity = registered(conn, Collection(self.table)).identity
            vectors = self.queries[identity.key]
            try:
                hits = search(conn, self.table, vectors[turn % len(vectors)], 3, identity)
            except ModelMismatchError:  # swapped between reading the model and searching: ask again
                self.retried += 1
                continue
            except Exception as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
                return
            self.answers.append((identity.key, hits[0].similarity if hits else float("nan")))
            return
        self.failures.append("the collection's model changed twice under one search")


def query_vectors(model: str, texts: list[str]) -> tuple[str, list[np.ndarray]]:
    provider = provider_spec(ProviderRequest("local", model))
    return provider.identity.key, list(embed_blocking(provider.open(), texts).vectors)


def test_a_migration_under_searches_swaps_in_one_step_and_rolls_back(
    tmp_path, tiny_model, other_tiny_model, pg_dsn, table_name
):
    rows = rows_of(120)
    source = write_jsonl(tmp_path / "docs.jsonl", rows)
    first = run(source, table_name, tiny_model, pg_dsn)
    assert first.embedded == 120
    old_key, old_vectors = query_vectors(tiny_model, [r["text"] for r in rows[:10]])
    new_key, new_vectors = query_vectors(other_tiny_model, [r["text"] for r in rows[:10]])

    with SearchLoop(pg_dsn, table_name, {old_key: old_vectors, new_key: new_vectors}) as loop:
        time.sleep(0.5)
        report = migration(source, table_name, other_tiny_model, pg_dsn)
        time.sleep(0.5)
    assert loop.failures == []
    assert report.swapped and report.figures.coverage == 1.0 and report.build.embedded == 120
    assert report.render().startswith(f"collection   {table_name}, its next version  ({new_key})")
    assert {key for key, _ in loop.answers} == {old_key, new_key}  # answers before and after the swap
    assert all(similarity > 0.9 for _, similarity in loop.answers)  # never one model's query on the other's vectors
    assert models_of(pg_dsn, table_name) == {new_key}
    assert models_of(pg_dsn, table_name, "vectorize_previous") == {old_key}
    assert identity_of(pg_dsn, table_name).key == new_key
    assert query(pg_dsn, f'SELECT count(*), count(DISTINCT id) FROM "public"."{table_name}"') == [(120, 120)]

    # the swapped-in collection is an ordinary one: a run with its new model reads and embeds nothing new
    after = run(source, table_name, other_tiny_model, pg_dsn)
    assert (after.embedded, after.unchanged) == (0, 120)

    assert cli_main(["migrate", "--table", table_name, "--rollback", "--dsn", pg_dsn]) == 0
    assert identity_of(pg_dsn, table_name).key == old_key and models_of(pg_dsn, table_name) == {old_key}
    assert models_of(pg_dsn, table_name, "vectorize_previous") == {new_key}
    assert cli_main(["migrate", "--table", table_name, "--drop-previous", "--dsn", pg_dsn]) == 0
    assert query(pg_dsn, "SELECT to_regclass(%s)", f'vectorize_previous."{table_name}"') == [(None,)]
    assert query(pg_dsn, "SELECT count(*) FROM vectorize_collections WHERE collection LIKE %s", f"%.{table_name}") == [
        (0,)
    ]


def _reader_searches(dsn: str, role: str, table: str, vector: np.ndarray) -> str:
    """The key of the model that answered a search made as ``role``."""
    with psycopg.connect(dsn, user=role) as conn:
        register_vector(conn)
        identity = registered(conn, Collection(table)).identity
        assert search(conn, table, vector, 3, identity)
        return identity.key


def _may(dsn: str, role: str, table: str, privilege: str) -> bool:
    return query(dsn, "SELECT has_table_privilege(%s, %s, %s)", role, f'"{table}"', privilege)[0][0]


def _stored(tmp_path, count: int, model: str, dsn: str, table: str) -> tuple[list[dict], object, str, list]:
    """A collection of ``count`` corpus rows made by a run of ``model``: the rows, their source,
    the model's key and the vector of the first row's text."""
    rows = rows_of(count)
    source = write_jsonl(tmp_path / "docs.jsonl", rows)
    run(source, table, model, dsn)
    key, vectors = query_vectors(model, [rows[0]["text"]])
    return rows, source, key, vectors


def _searched(dsn: str, table: str, vector: np.ndarray, k: int, **mode) -> list[tuple[str, float]]:
    """(id, similarity) of a search with the collection's model as the registry names it now."""
    with psycopg.connect(dsn) as conn:
        register_vector(conn)
        identity = registered(conn, Collection(table)).identity
        return [(h.id, round(h.similarity, 4)) for h in search(conn, table, vector, k, identity, **mode)]


def test_keyword_search_dropped_by_a_storage_migration_comes_back_by_rollback_or_a_migration(
    tmp_path, tiny_model, pg_dsn, table_name
):
    rows, source, _, vectors = _stored(tmp_path, 30, tiny_model, pg_dsn, table_name)
    word = max(rows[0]["text"].split(), key=len)

    def by_words() -> list[str]:
        return [i for i, _ in _searched(pg_dsn, table_name, vectors[0], 3, mode="hybrid", words=word)]

    def by_vector() -> list[tuple[str, float]]:
        return _searched(pg_dsn, table_name, vectors[0], 5)

    assert rows[0]["id"] in by_words()
    nearest = by_vector()
    report = migration(source, table_name, tiny_model, pg_dsn, text_search="none")
    assert report.swapped and report.copied == 30 and report.build.embedded == 0
    with pytest.raises(ConfigError, match="was made without keyword search \\(--text-search none\\)"):
        by_words()
    assert by_vector() == nearest  # the same vectors, copied
    assert cli_main(["migrate", "--table", table_name, "--dsn", pg_dsn, "--rollback"]) == 0
    assert rows[0]["id"] in by_words()
    assert cli_main(["migrate", "--table", table_name, "--dsn", pg_dsn, "--rollback"]) == 0  # none live again
    assert cli_main(["migrate", "--table", table_name, "--dsn", pg_dsn, "--drop-previous"]) == 0
    added = migration(source, table_name, tiny_model, pg_dsn, text_search="simple")  # the index added later
    assert added.swapped and added.copied == 30 and added.build.embedded == 0
    assert rows[0]["id"] in by_words() and by_vector() == nearest


def test_a_storage_change_copies_the_vectors_and_a_reading_role_follows_the_swap_and_rollback(
    tmp_path, tiny_model, pg_dsn, table_name
):
    _, source, key, vectors = _stored(tmp_path, 40, tiny_model, pg_dsn, table_name)
    role = f"reader_{table_name}"[:63]
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT SELECT ON vectorize_collections, {} TO {}").format(
            sql.Identifier(table_name), sql.Identifier(role)))  # fmt: skip
    try:
        assert _reader_searches(pg_dsn, role, table_name, vectors[0]) == key
        before = query(pg_dsn, f'SELECT id, embedding::text FROM "{table_name}" ORDER BY id')
        report = migration(source, table_name, tiny_model, pg_dsn, vector_type="halfvec")
        assert report.swapped and report.copied == 40 and report.build.embedded == 0
        column = query(pg_dsn, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = "
                       "%s::regclass AND attname = 'embedding'", f'"{table_name}"')  # fmt: skip
        assert column == [("halfvec(32)",)]
        after = dict(query(pg_dsn, f'SELECT id, embedding::vector::text FROM "{table_name}"'))
        for id_, text in before:
            np.testing.assert_allclose(np.array(after[id_].strip("[]").split(","), float),
                                       np.array(text.strip("[]").split(","), float), atol=2e-3)  # fmt: skip

        assert _reader_searches(pg_dsn, role, table_name, vectors[0]) == key  # the swapped-in version's privileges
        assert not _may(pg_dsn, role, table_name, "UPDATE")
        with psycopg.connect(pg_dsn, autocommit=True) as conn:  # given to the version swapped in
            conn.execute(sql.SQL("GRANT UPDATE ON {} TO {}").format(sql.Identifier(table_name), sql.Identifier(role)))
        assert cli_main(["migrate", "--table", table_name, "--dsn", pg_dsn, "--rollback"]) == 0
        assert _reader_searches(pg_dsn, role, table_name, vectors[0]) == key
        assert _may(pg_dsn, role, table_name, "UPDATE")  # carried back to the version rolled back to
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def _refused(capsys, *args: str) -> str:
    code = cli_main(["migrate", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    return err[0]


def registry_rows(dsn: str) -> list[tuple]:
    return query(dsn, "SELECT collection, identity_key, storage::text FROM vectorize_collections ORDER BY collection")


def test_what_a_migration_cannot_do_is_one_line_and_changes_nothing(
    tmp_path, tiny_model, other_tiny_model, pg_dsn, table_name, capsys
):
    from tests.tiny_model import build_tiny_model

    third = str(build_tiny_model(tmp_path / "third", seed=2, hidden=48))
    source = write_jsonl(tmp_path / "docs.jsonl", rows_of(20))
    dsn = ["--dsn", pg_dsn]
    assert "no collection" in _refused(capsys, str(source), "--table", table_name, "--model", tiny_model, *dsn)
    run(source, table_name, tiny_model, pg_dsn)
    before = registry_rows(pg_dsn)
    line = _refused(capsys, str(source), "--table", table_name, "--model", tiny_model, *dsn)
    assert "already holds vectors of" in line and "nothing to migrate" in line
    assert "no previous version to roll back" in _refused(capsys, "--table", table_name, "--rollback", *dsn)
    assert "no previous version" in _refused(capsys, "--table", table_name, "--drop-previous", *dsn)
    assert "no migration in progress" in _refused(capsys, "--table", table_name, "--abort", *dsn)
    assert "drop --limit" in _refused(capsys, str(source), "--table", table_name, "--model", third, "--limit", "5",
                                      *dsn)  # fmt: skip
    assert registry_rows(pg_dsn) == before

    # a build in progress (coverage below the bar leaves it unswapped) refuses another model
    empty = write_jsonl(tmp_path / "empty.jsonl", [{"id": r["id"], "text": " "} for r in rows_of(20)])
    report = migration(empty, table_name, other_tiny_model, pg_dsn)
    assert not report.swapped and report.figures.coverage == 0.0
    building = registry_rows(pg_dsn)
    line = _refused(capsys, str(source), "--table", table_name, "--model", third, *dsn)
    assert "in progress" in line and "--abort" in line
    assert registry_rows(pg_dsn) == building
    assert cli_main(["migrate", "--table", table_name, "--status", *dsn]) == 0
    status = capsys.readouterr().out
    assert "live" in status and "next" in status and "0 ids" in status
    assert cli_main(["migrate", "--table", table_name, "--abort", *dsn]) == 0
    assert registry_rows(pg_dsn) == before


def test_a_remote_model_collection_moves_to_a_local_model(tmp_path, tiny_model, pg_dsn, table_name, openai_server):
    from tests.test_openai_job import remote

    rows = [{**r, "text": r["text"][:60]} for r in rows_of(30)]
    source = write_jsonl(tmp_path / "docs.jsonl", rows)
    first = run_job_remote(source, table_name, pg_dsn, remote(openai_server))
    assert first.embedded == 30
    report = migration(source, table_name, tiny_model, pg_dsn)
    assert report.swapped and report.build.embedded == 30
    assert identity_of(pg_dsn, table_name).dimensions == 32
    assert query(pg_dsn, "SELECT provider FROM vectorize_collections WHERE collection = %s", table_name) == [(None,)]
    previous = query(pg_dsn, "SELECT identity->>'revision' FROM vectorize_collections WHERE collection = %s",
                     f"vectorize_previous.{table_name}")  # fmt: skip
    assert previous[0][0].startswith("api:")


def run_job_remote(source, table, dsn, settings):
    from jobs.launch import run_job

    return run_job(RunSettings.of(source=str(source), table=table, dsn=dsn, remote=settings, batch_size=16,
                                  actors=(1, 1)))  # fmt: skip


@pytest.mark.slow
def test_a_killed_migration_continues_where_it_stopped(tmp_path, tiny_model, other_tiny_model, pg_dsn, table_name,
                                                      ray_cluster):  # fmt: skip
    total = 1500
    rows = [{"id": f"m{i}", "text": f"migrated row {i} " + "padding words " * (i % 13)} for i in range(total)]
    source = write_jsonl(tmp_path / "big.jsonl", rows)
    run(source, table_name, tiny_model, pg_dsn, batch_size=64)
    address = ray_cluster.get_runtime_context().gcs_address
    driver = subprocess.Popen(
        [sys.executable, "-m", "jobs.migrate", str(source), "--table", table_name, "--model", other_tiny_model,
         "--dsn", pg_dsn, "--batch-size", "8", "--writers", "1", "--address", address, "--json"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    shadow = f'vectorize_next."{table_name}"'
    stored_when_killed = kill_once_stored(driver, pg_dsn, shadow)
    assert 0 < stored_when_killed < total, (stored_when_killed, driver.stderr.read()[-2000:])
    old_key = identity_of(pg_dsn, table_name).key
    assert models_of(pg_dsn, table_name) == {old_key}  # the live version untouched by the killed build

    report = migration(source, table_name, other_tiny_model, pg_dsn, batch_size=64)
    assert report.swapped
    assert report.build.unchanged >= stored_when_killed
    assert report.build.embedded + report.build.unchanged == total
    assert query(pg_dsn, f'SELECT count(*), count(DISTINCT id) FROM "{table_name}"') == [(total, total)]
    assert models_of(pg_dsn, table_name) != {old_key}
    history = query(pg_dsn, "SELECT collection, status FROM vectorize_runs WHERE collection LIKE %s "
                    "ORDER BY started_at", f"%{table_name}")  # fmt: skip
    # each version's runs went with it: the old one's to the previous version, the build's to the collection
    assert history == [(f"vectorize_previous.{table_name}", "succeeded"), (table_name, "abandoned"),
                       (table_name, "succeeded")]  # fmt: skip


def test_the_swap_waits_for_a_search_in_progress_and_searches_after_it_see_the_new_model(
    tmp_path, tiny_model, other_tiny_model, pg_dsn, table_name
):
    from jobs.launch import run_job
    from jobs.migrate import swap
    from vectorize.store.versions import search_lock

    rows = rows_of(30)
    source = write_jsonl(tmp_path / "docs.jsonl", rows)
    run(source, table_name, tiny_model, pg_dsn)
    run_job(RunSettings.of(source=str(source), table=table_name, model=other_tiny_model, dsn=pg_dsn, migration=True,
                           batch_size=16, actors=(1, 1)))  # fmt: skip
    old_key, old_vectors = query_vectors(tiny_model, [rows[0]["text"]])
    new_key, new_vectors = query_vectors(other_tiny_model, [rows[0]["text"]])
    old, new = identity_of(pg_dsn, table_name), None

    with psycopg.connect(pg_dsn, autocommit=True) as slow:
        register_vector(slow)
        with slow.transaction():  # a search that has begun: it holds the collection's version
            search_lock(slow, table_name)
            swapping = threading.Thread(target=swap, args=(pg_dsn, table_name))
            swapping.start()
            swapping.join(2.0)
            assert swapping.is_alive()  # the swap waits for the search
            hits = search(slow, table_name, old_vectors[0], 3, old)
            assert hits[0].similarity > 0.9 and models_of(pg_dsn, table_name) == {old_key}
        swapping.join(30)
        assert not swapping.is_alive()
        new = identity_of(pg_dsn, table_name)
        assert new.key == new_key
        with pytest.raises(ModelMismatchError):
            search(slow, table_name, old_vectors[0], 3, old)
        assert search(slow, table_name, new_vectors[0], 3, new)[0].similarity > 0.9


def test_a_build_with_rows_still_in_batch_api_batches_is_not_swapped(
    tmp_path, tiny_model, pg_dsn, table_name, openai_server
):
    from tests.test_openai_job import remote
    from vectorize.remote_settings import BatchApiSettings

    rows = [{**r, "text": r["text"][:100]} for r in rows_of(40)]
    source = write_jsonl(tmp_path / "docs.jsonl", rows[:30])
    run(source, table_name, tiny_model, pg_dsn)
    openai_server.state.batch.step_s = 0.5

    def build(wait: bool):
        settings = remote(openai_server, batch=BatchApiSettings(wait=wait, poll_interval_s=0.1))
        return migrate(RunSettings.of(source=str(source), table=table_name, dsn=pg_dsn, remote=settings), 1.0)

    first = build(wait=False)
    assert not first.swapped and first.waiting == 30
    time.sleep(2.0)
    write_jsonl(source, rows)  # ten more rows: the next build collects the thirty and submits the ten
    second = build(wait=False)
    assert second.figures.ids == 30 and second.figures.failed_ids == 0 and second.waiting == 10
    assert not second.swapped and "still wait in Batch API batches" in second.render()
    assert identity_of(pg_dsn, table_name).dimensions == 32  # the live version answers as before
    from jobs.migrate import abort
    from vectorize.errors import MigrationError

    with pytest.raises(MigrationError, match="has Batch API batches open"):  # paid for: not thrown away
        abort(pg_dsn, table_name)
    time.sleep(2.0)
    third = build(wait=True)
    assert third.swapped and third.figures.ids == 40
    assert identity_of(pg_dsn, table_name).dimensions == 1536


def test_the_swap_gives_way_to_a_reader_without_the_lock_and_tries_again(
    tmp_path, tiny_model, other_tiny_model, pg_dsn, table_name
):
    from jobs.launch import run_job
    from jobs.migrate import swap

    source = write_jsonl(tmp_path / "docs.jsonl", rows_of(20))
    run(source, table_name, tiny_model, pg_dsn)
    run_job(RunSettings.of(source=str(source), table=table_name, model=other_tiny_model, dsn=pg_dsn, migration=True,
                           batch_size=16, actors=(1, 1)))  # fmt: skip
    old = identity_of(pg_dsn, table_name)
    _, vectors = query_vectors(tiny_model, ["a query"])
    with psycopg.connect(pg_dsn, autocommit=True) as reader:
        reader.execute("BEGIN")
        reader.execute(f'LOCK TABLE "{table_name}" IN ACCESS SHARE MODE')  # as a long check or pg_dump holds it
        swapping = threading.Thread(target=swap, args=(pg_dsn, table_name))
        swapping.start()
        time.sleep(6.0)  # past the swap's first wait for the tables: it let go, and searches go on
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            register_vector(conn)
            started = time.monotonic()
            assert search(conn, table_name, vectors[0], 3, old)
            assert time.monotonic() - started < 5.5
        reader.execute("COMMIT")
        swapping.join(30)
    assert not swapping.is_alive()
    assert identity_of(pg_dsn, table_name).key != old.key


def test_a_wider_model_gets_the_storage_its_dimensions_need():
    from jobs.migrate import _storage_request
    from vectorize.store.storage import Storage, StorageRequest, storage_for

    live = Storage(vector_type="vector", index="hnsw", hnsw_m=24, text_search="english")
    wide = _storage_request(StorageRequest(), live, 3072, "docs")
    assert storage_for(wide, None, 3072, "docs") == Storage(vector_type="halfvec", index="hnsw", hnsw_m=24,
                                                             text_search="english")  # fmt: skip
    narrow = _storage_request(StorageRequest(), Storage(vector_type="halfvec", index="none"), 384, "docs")
    assert storage_for(narrow, None, 384, "docs").vector_type == "halfvec"  # kept where it fits


def test_hostile_records_do_not_hold_the_swap_and_every_line_is_stored_or_an_error_row(
    tmp_path, tiny_model, other_tiny_model, pg_dsn, table_name
):
    import json

    good = [{"id": f"g{i}", "text": f"a good record number {i}"} for i in range(12)]
    hostile = [json.dumps(r) for r in good] + [
        json.dumps({"id": "nul", "text": "a\u0000b"}), '{"id": "sur", "text": "half \\ud800 a pair"}',
        json.dumps({"id": "x" * 5000, "text": "an absurd id"}), json.dumps({"id": "g3", "text": "a duplicate id"}),
        '{"id": "broken", "text": ', json.dumps({"id": "blank", "text": "   "}),
    ]  # fmt: skip
    source = tmp_path / "hostile.jsonl"
    source.write_text("\n".join(hostile) + "\n")
    run(source, table_name, tiny_model, pg_dsn)
    report = migration(source, table_name, other_tiny_model, pg_dsn)
    assert report.swapped and report.figures.failed_ids == 0 and report.figures.source_failed_ids >= 3
    stored = query(pg_dsn, f'SELECT count(*) FROM "{table_name}"')[0][0]
    failed = query(pg_dsn, f'SELECT count(*) FROM "{table_name}_errors"')[0][0]
    assert stored == 14 and stored + failed == len(hostile)  # every line of the file is in one or the other


def test_a_check_waiting_on_a_swap_measures_the_version_swapped_in(
    tmp_path, tiny_model, other_tiny_model, pg_dsn, table_name
):
    from jobs.check import check_collection
    from vectorize.store.versions import roll_back, versions_lock_key

    _, source, _, _ = _stored(tmp_path, 30, tiny_model, pg_dsn, table_name)
    assert migration(source, table_name, other_tiny_model, pg_dsn).swapped
    reports, failures = [], []

    def checking() -> None:
        try:
            reports.append(check_collection(pg_dsn, table_name, sample=0))
        except Exception as exc:  # the assertion below names it
            failures.append(repr(exc))

    with psycopg.connect(pg_dsn, autocommit=True) as swapper, swapper.transaction():
        swapper.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (versions_lock_key(table_name),))
        check = threading.Thread(target=checking)
        check.start()
        deadline = time.monotonic() + 60
        waiting = ("SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                   "AND objid::bigint = hashtext(%s)::bigint & 4294967295")  # fmt: skip
        while not query(pg_dsn, waiting, versions_lock_key(table_name)):
            assert check.is_alive() and time.monotonic() < deadline, failures
            time.sleep(0.1)
        roll_back(swapper, table_name)  # the check waits, and then sees the rollback whole
    check.join(60)
    assert not failures and len(reports) == 1
    assert reports[0].model == identity_of(pg_dsn, table_name).key
    assert reports[0].figures.rows == 30 and reports[0].figures.other_model == 0


def test_a_swap_while_a_check_looks_up_neighbours_refuses_it_in_one_line(
    tmp_path, tiny_model, other_tiny_model, pg_dsn, table_name, monkeypatch
):
    import jobs.neighbours
    from jobs.check import check_collection
    from jobs.migrate import roll_back

    _, source, _, _ = _stored(tmp_path, 30, tiny_model, pg_dsn, table_name)
    assert migration(source, table_name, other_tiny_model, pg_dsn).swapped
    swapped_to = identity_of(pg_dsn, table_name)
    looked_up = jobs.neighbours.neighbour_similarities

    def then_roll_back(*args):
        found = looked_up(*args)
        roll_back(pg_dsn, table_name)  # a real swap, between the sample and its verdicts
        return found

    monkeypatch.setattr(jobs.neighbours, "neighbour_similarities", then_roll_back)
    with pytest.raises(MigrationError) as refused:
        check_collection(pg_dsn, table_name, sample=20)
    back = identity_of(pg_dsn, table_name)
    assert str(refused.value) == (
        f"collection {table_name!r} was swapped to another version ({back.name}) while it was checked (its "
        f"sample from {swapped_to.name}): run `vectorize check` again"
    )
    monkeypatch.undo()
    report = check_collection(pg_dsn, table_name, sample=20)
    assert report.model == back.key and report.neighbours is not None


def test_the_one_version_snapshot_is_repeatable_read_only_and_lets_go_of_its_lock(pg_dsn, table_name):
    from vectorize.store.versions import snapshot_of_one_version

    def held() -> int:
        return query(pg_dsn, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = %s", pid)[0][0]

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        pid = conn.info.backend_pid
        with snapshot_of_one_version(conn, table_name):
            assert conn.execute("SHOW transaction_isolation").fetchone()[0] == "repeatable read"
            assert conn.execute("SHOW transaction_read_only").fetchone()[0] == "on"
            assert held() == 1
        assert held() == 0
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction), snapshot_of_one_version(conn, table_name):
            conn.execute("CREATE TABLE written_in_a_check (x int)")
        assert held() == 0 and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
