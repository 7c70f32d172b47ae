"""A collection searched at a steady rate while ``vectorize migrate`` moves it to another model.

A collection of ``--rows`` commit messages of the shared corpus is made with the old model (by
default a random-weight BERT of MiniLM's width, two layers: quick to build, and unrelated to
the new model's vectors), then migrated to ``--new`` (all-MiniLM-L6-v2) through
``jobs.migrate.migrate`` with the run's defaults, while client threads search it at ``--rate``
searches a second through ``vectorize.search.search``, each on a connection of its own, as a
Serve replica does: the client reads the collection's model, takes its query vector of that
model and searches; a search refused because a swap changed the model in between is asked again
with the new one (its time counts both).

Phases, one run: ``before`` (nothing else running), ``both cores busy`` (two processes spinning,
the control: what CPU competition alone does to a search), ``build`` (the migration running, up
to 1 s before the first answer of the new model), ``swap`` (1 s either side of that answer),
``after``; the build is also split by whether Postgres was building an index then (seen in
``pg_stat_progress_create_index``). Latency is per search, from its call to its answer.

    python bench/migrate.py [--rows 20000] [--rate 20] [--phase-s 15] [--new all-MiniLM-L6-v2]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from corpus import CORPUS, load_rows, workspace

CLIENTS = 2
QUERIES = 200


def spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


class Clients:
    def __init__(self, dsn: str, table: str, vectors: dict, rate: float) -> None:
        self.dsn, self.table, self.vectors, self.rate = dsn, table, vectors, rate
        self.records: list[tuple[float, float, str | None, bool]] = []  # (start, seconds, model key, ok)
        self.retried = 0
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._loop, args=(i,), daemon=True) for i in range(CLIENTS)]
        self.lock = threading.Lock()

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)

    def _loop(self, number: int) -> None:
        import psycopg
        from pgvector.psycopg import register_vector

        interval = CLIENTS / self.rate
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            register_vector(conn)
            due, turn = time.monotonic() + number * interval / CLIENTS, number
            while not self.stop.is_set():
                time.sleep(max(0.0, due - time.monotonic()))
                due += interval
                turn += CLIENTS
                started = time.monotonic()
                key, ok = self._search(conn, turn)
                with self.lock:
                    self.records.append((started, time.monotonic() - started, key, ok))

    def _search(self, conn, turn: int) -> tuple[str | None, bool]:
        from vectorize.errors import ModelMismatchError
        from vectorize.search import search
        from vectorize.store.collection import Collection
        from vectorize.store.registry import registered

        for _attempt in range(2):
            identity = registered(conn, Collection(self.table)).identity
            queries = self.vectors[identity.key]
            try:
                hits = search(conn, self.table, queries[turn % len(queries)], 10, identity)
            except ModelMismatchError:
                self.retried += 1
                continue
            except Exception as exc:  # a failed search is what this bench counts
                print(f"search failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                return identity.key, False
            return identity.key, len(hits) == 10
        return None, False


class IndexBuilds:
    """When Postgres builds an index (``pg_stat_progress_create_index``), seen from outside."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.spans: list[list[float]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            building = False
            while not self.stop.wait(0.05):
                now = time.monotonic()
                active = conn.execute("SELECT count(*) FROM pg_stat_progress_create_index").fetchone()[0] > 0
                if active and not building:
                    self.spans.append([now, now])
                if active:
                    self.spans[-1][1] = now
                building = active

    def during(self, moment: float) -> bool:
        return any(start <= moment <= end for start, end in self.spans)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def old_model(spec: str) -> str:
    if spec != "random":
        return spec
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.tiny_model import build_tiny_model

    return str(build_tiny_model(Path(tempfile.mkdtemp(prefix="bench-old-model-")), hidden=384))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--rate", type=float, default=20.0, help="searches a second, all clients together")
    parser.add_argument("--phase-s", type=float, default=15.0)
    parser.add_argument("--old", default="random", help="the collection's model: random (a random BERT) or a model")
    parser.add_argument("--new", default="all-MiniLM-L6-v2")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from jobs.launch import run_job
    from jobs.migrate import migrate
    from vectorize.providers.base import ProviderRequest, embed_blocking, provider_spec
    from vectorize.ray_runtime import ensure_ray
    from vectorize.settings import RunSettings

    rows = load_rows(args.rows + QUERIES)
    source, server = workspace(rows[: args.rows], "vectorize-bench-migrate-")
    dsn, table = server.get_uri(), "bench_migrate"
    old = old_model(args.old)
    ensure_ray()
    made = run_job(RunSettings.of(source=str(source), table=table, model=old, dsn=dsn))
    print(f"collection of {made.embedded} rows made with the old model in {made.seconds:.0f} s", file=sys.stderr)
    texts = [r["text"] for r in rows[args.rows :]]
    vectors = {}
    for model in (old, args.new):
        provider = provider_spec(ProviderRequest("local", model))
        vectors[provider.identity.key] = list(embed_blocking(provider.open(), texts).vectors)
    old_key = provider_spec(ProviderRequest("local", old)).identity.key

    clients = Clients(dsn, table, vectors, args.rate)
    indexes = IndexBuilds(dsn)
    indexes.thread.start()
    clients.start()
    marks = {"start": time.monotonic()}
    time.sleep(args.phase_s)
    marks["busy"] = time.monotonic()
    burners = [multiprocessing.Process(target=spin, args=(args.phase_s,)) for _ in range(os.cpu_count() or 2)]
    for burner in burners:
        burner.start()
    for burner in burners:
        burner.join()
    marks["migrate"] = time.monotonic()
    report = migrate(RunSettings.of(source=str(source), table=table, model=args.new, dsn=dsn))
    marks["migrated"] = time.monotonic()
    time.sleep(args.phase_s)
    clients.join()
    indexes.stop.set()
    server_rows = report.figures.rows

    records = clients.records
    first_new = min((start for start, _, key, ok in records if ok and key != old_key), default=float("nan"))
    phases = {
        "before": lambda t: marks["start"] <= t < marks["busy"],
        "both cores busy (control)": lambda t: marks["busy"] <= t < marks["migrate"],
        "build": lambda t: marks["migrate"] <= t < first_new - 1.0,
        "build: embedding and writing": lambda t: marks["migrate"] <= t < first_new - 1.0 and not indexes.during(t),
        "build: its HNSW index": lambda t: marks["migrate"] <= t < first_new - 1.0 and indexes.during(t),
        "swap (1 s either side)": lambda t: first_new - 1.0 <= t < first_new + 1.0,
        "after": lambda t: first_new + 1.0 <= t,
    }
    print(f"\n{args.rows} rows of {CORPUS.name}; migrated to {args.new} ({server_rows} rows, "
          f"swapped: {report.swapped}, build {report.build.seconds:.0f} s); {args.rate:g} searches/s from "
          f"{CLIENTS} clients; {os.cpu_count()} cores\n")  # fmt: skip
    print("| phase | searches | failed | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|")
    p99 = {}
    for name, within in phases.items():
        mine = [(seconds, ok) for start, seconds, _, ok in records if within(start)]
        times = [1000 * seconds for seconds, _ in mine]
        p99[name] = percentile(times, 0.99)
        median = statistics.median(times) if times else 0.0
        print(f"| {name} | {len(mine)} | {sum(not ok for _, ok in mine)} | {median:.1f} | {p99[name]:.1f} "
              f"| {max(times, default=0):.1f} |")  # fmt: skip
    swap_times = [1000 * s for start, s, _, _ in records if phases["swap (1 s either side)"](start)]
    print(f"\nlongest search at the swap: {max(swap_times, default=0):.1f} ms; searches asked again after a swap: "
          f"{clients.retried}; failed in all: {sum(not ok for *_, ok in records)}")  # fmt: skip
    built = sum(end - start for start, end in indexes.spans)
    print(f"index builds seen: {len(indexes.spans)}, {built:.1f} s in all")
    print(
        f"p99 during the build / before: {p99['build'] / p99['before']:.2f}x; "
        f"its embedding and writing / before: {p99['build: embedding and writing'] / p99['before']:.2f}x; "
        f"both cores busy / before: {p99['both cores busy (control)'] / p99['before']:.2f}x"
    )
    server.cleanup()


if __name__ == "__main__":
    main()
