"""A collection searched at a steady rate while ``vectorize migrate`` moves it to another model.

A collection of ``--rows`` commit messages of the shared corpus is made with the old model (by
default a random-weight BERT of MiniLM's width, two layers: quick to build, and unrelated to
the new model's vectors), then migrated to ``--new`` (all-MiniLM-L6-v2) through
``jobs.migrate.migrate`` with the run's defaults (or ``--actors N``), while client threads
search it at ``--rate`` searches a second through ``vectorize.search.search``, each on a
connection of its own, in a process of their own, as a Serve replica does: the client reads the
collection's model, takes its query vector of that model and searches; a search refused because
a swap changed the model in between is asked again with the new one (its time counts both).

Phases, one run: ``before`` (nothing else running); two controls, ``both cores busy`` (a
process per core spinning: what CPU competition alone does to a search) and ``the new model on
both cores`` (the build's own compute without its pipeline: the new model encoding through the
job's provider, a process per core at the nice Ray gives its workers; no Ray, no writes);
``build`` (the migration running, up to 1 s before the first answer of the new model), ``swap``
(1 s either side of that answer), ``after``. The build is also split by whether Postgres was
building an index then (seen in ``pg_stat_progress_create_index``). Latency is per search, from
its call to its answer.

    python bench/migrate.py [--rows 20000] [--rate 20] [--before-s 45] [--phase-s 15] [--new all-MiniLM-L6-v2]
                            [--actors N]
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
SETTLE_S = 3.0  # after the clients' first searches, before the "before" phase
RAY_WORKER_NICE = 15  # Ray starts its worker processes at this nice (the raylet's worker_niceness)
ENCODE_BATCH = 64


def spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def encode_loop(model: str, texts: list[str], ready, go, seconds: float) -> None:
    """The build's own compute without its pipeline: the new model, through the job's provider
    on one thread, at the nice Ray gives its workers, encoding for ``seconds`` once every
    process has loaded it."""
    os.nice(RAY_WORKER_NICE)
    from vectorize.providers.base import ProviderRequest, embed_blocking, provider_spec

    provider = provider_spec(ProviderRequest("local", model)).open(1)
    ready.wait(300)
    go.wait(300)
    end, turn = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        embed_blocking(provider, texts[turn : turn + ENCODE_BATCH] or texts[:ENCODE_BATCH])
        turn = (turn + ENCODE_BATCH) % len(texts)


class Clients:
    """The searching clients in a process of their own, as a Serve replica or ``vectorize search``
    is: never in the migrating driver's process, whose threads would share their GIL."""

    def __init__(self, dsn: str, table: str, vectors: dict, rate: float) -> None:
        context = multiprocessing.get_context("spawn")
        self.ready, self.stop, self.results = context.Barrier(CLIENTS + 1), context.Event(), context.Queue()
        self.process = context.Process(
            target=search_loops, args=(dsn, table, vectors, rate, self.ready, self.stop, self.results)
        )
        self.records: list[tuple[float, float, str | None, bool]] = []  # (start, seconds, model key, ok)
        self.retried = 0

    def start(self) -> None:
        """Once every client has made one search (untimed: its imports and connection)."""
        self.process.start()
        self.ready.wait(120)

    def join(self) -> None:
        self.stop.set()
        self.records, self.retried = self.results.get(timeout=120)
        self.process.join(60)


def search_loops(dsn: str, table: str, vectors: dict, rate: float, ready, stop, results) -> None:
    """``CLIENTS`` threads searching at ``rate`` in all until ``stop``; their records and
    retries go back on ``results``. Monotonic time is the machine's, the same in both processes."""
    records: list[tuple[float, float, str | None, bool]] = []
    retried = [0]
    lock = threading.Lock()

    def loop(number: int) -> None:
        import psycopg
        from pgvector.psycopg import register_vector

        interval = CLIENTS / rate
        with psycopg.connect(dsn, autocommit=True) as conn:
            register_vector(conn)
            one_search(conn, table, vectors, number, [0])
            ready.wait(120)
            due, turn = time.monotonic() + number * interval / CLIENTS, number
            while not stop.is_set():
                time.sleep(max(0.0, due - time.monotonic()))
                due += interval
                turn += CLIENTS
                started = time.monotonic()
                key, ok = one_search(conn, table, vectors, turn, retried)
                with lock:
                    records.append((started, time.monotonic() - started, key, ok))

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put((records, retried[0]))


def one_search(conn, table: str, vectors: dict, turn: int, retried: list[int]) -> tuple[str | None, bool]:
    from vectorize.errors import ModelMismatchError
    from vectorize.search import search
    from vectorize.store.collection import Collection
    from vectorize.store.registry import registered

    for _attempt in range(2):
        identity = registered(conn, Collection(table)).identity
        queries = vectors[identity.key]
        try:
            hits = search(conn, table, queries[turn % len(queries)], 10, identity)
        except ModelMismatchError:
            retried[0] += 1
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


def cpu_times() -> list[int]:
    """The machine's CPU time so far, in ticks: user, nice, system, idle, iowait, irq, softirq, steal."""
    with open("/proc/stat") as stat:
        return [int(v) for v in stat.readline().split()[1:9]]


def cpu_shares(start: list[int], end: list[int]) -> str:
    """Busy, of it at nice (Ray's workers), iowait and stolen by the host, as shares of the span."""
    user, nice, system, idle, iowait, irq, softirq, steal = (b - a for a, b in zip(start, end, strict=True))
    total = max(1, user + nice + system + idle + iowait + irq + softirq + steal)
    busy = user + nice + system + irq + softirq
    return f"{busy / total:.0%} | {nice / total:.0%} | {iowait / total:.1%} | {steal / total:.1%}"


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
    parser.add_argument("--phase-s", type=float, default=15.0, help="the controls and after")
    parser.add_argument("--before-s", type=float, default=45.0, help="the baseline: its p99 wants many searches")
    parser.add_argument("--old", default="random", help="the collection's model: random (a random BERT) or a model")
    parser.add_argument("--new", default="all-MiniLM-L6-v2")
    parser.add_argument("--actors", type=int, default=None, help="the migration's embedding actors (default: a run's)")
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
    time.sleep(SETTLE_S)
    marks = {"start": time.monotonic()}
    ticks = {"start": cpu_times()}
    time.sleep(args.before_s)
    cores = os.cpu_count() or 2
    marks["busy"] = time.monotonic()
    ticks["busy"] = cpu_times()
    burners = [multiprocessing.Process(target=spin, args=(args.phase_s,)) for _ in range(cores)]
    for burner in burners:
        burner.start()
    for burner in burners:
        burner.join()
    marks["loading"] = time.monotonic()
    ticks["loading"] = cpu_times()
    spawn = multiprocessing.get_context("spawn")
    ready, go = spawn.Barrier(cores + 1), spawn.Event()
    work = (args.new, texts, ready, go, args.phase_s)
    encoders = [spawn.Process(target=encode_loop, args=work) for _ in range(cores)]
    for encoder in encoders:
        encoder.start()
    ready.wait(300)  # the models loaded: that time is in no phase
    marks["encode"] = time.monotonic()
    ticks["encode"] = cpu_times()
    go.set()
    for encoder in encoders:
        encoder.join()
    marks["migrate"] = time.monotonic()
    ticks["migrate"] = cpu_times()
    actors = {"actors": (args.actors, args.actors)} if args.actors else {}
    report = migrate(RunSettings.of(source=str(source), table=table, model=args.new, dsn=dsn, **actors))
    marks["migrated"] = time.monotonic()
    ticks["migrated"] = cpu_times()
    time.sleep(args.phase_s)
    ticks["end"] = cpu_times()
    clients.join()
    indexes.stop.set()
    server_rows = report.figures.rows

    records = clients.records
    first_new = min((start for start, _, key, ok in records if ok and key != old_key), default=float("nan"))
    phases = {
        "before": lambda t: marks["start"] <= t < marks["busy"],
        "both cores busy (control)": lambda t: marks["busy"] <= t < marks["loading"],
        "the new model on both cores (control)": lambda t: marks["encode"] <= t < marks["migrate"],
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
    print("\n| span | CPU busy | at nice | iowait | stolen by the host |\n|---|---|---|---|---|")
    for name, (start, end) in {
        "before": ("start", "busy"),
        "both cores busy (control)": ("busy", "loading"),
        "the new model on both cores (control)": ("encode", "migrate"),
        "build and swap": ("migrate", "migrated"),
        "after": ("migrated", "end"),
    }.items():
        print(f"| {name} | {cpu_shares(ticks[start], ticks[end])} |")
    built = sum(end - start for start, end in indexes.spans)
    print(f"index builds seen: {len(indexes.spans)}, {built:.1f} s in all")
    print(
        f"p99 during the build / before: {p99['build'] / p99['before']:.2f}x; "
        f"its embedding and writing / before: {p99['build: embedding and writing'] / p99['before']:.2f}x; "
        f"both cores busy / before: {p99['both cores busy (control)'] / p99['before']:.2f}x; "
        f"the new model on both cores / before: {p99['the new model on both cores (control)'] / p99['before']:.2f}x"
    )
    server.cleanup()


if __name__ == "__main__":
    main()
