"""Reading a Postgres table: the sharded ``read_sql`` against one query, and a --sync rerun.

A 100,000-row source table (commit messages of the shared corpus, repeated with their row
number) in an embedded Postgres; the tiny test model, so that reading dominates. In one run:

- rows/s of the sharded reader against a single-query read of the same table (after one
  untimed read, each read three times, alternating; the fastest of each counts), the dataset
  materialised in Ray;
- a first ``--sync`` run of the whole job, then a second when nothing changed (five times,
  the median counts): its seconds against the first run's reading time (the target: under 10%).

    python bench/read_sql.py [--rows 100000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from corpus import load_rows


def make_source(dsn: str, table: str, count: int) -> None:
    import psycopg

    commits = [r["text"] for r in load_rows(20_000) if r["text"].strip()]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, title text, body text, stars int)")
        with conn.cursor().copy(f"COPY {table} (id, title, body, stars) FROM STDIN") as copy:
            for i in range(count):
                text = commits[i % len(commits)]
                title, _, body = text.partition("\n")
                copy.write_row((i, f"{title[:200]} #{i}", body.strip(), i % 50))
        conn.execute(f"ANALYZE {table}")


def timed_read(plan, shards: int | None) -> tuple[float, int, int]:
    started = time.perf_counter()
    dataset = plan.sql.read(0.25, shards=shards).materialize()
    return time.perf_counter() - started, dataset.count(), dataset.num_blocks()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()

    from extract.sources import open_source
    from jobs.launch import run_job
    from tests.tiny_model import build_tiny_model
    from vectorize.embedded_pg import start_embedded_postgres
    from vectorize.ray_runtime import ensure_ray
    from vectorize.settings import RunSettings

    work = Path(tempfile.mkdtemp(prefix="vectorize-bench-sql-"))
    dsn = start_embedded_postgres(work / "pg")
    make_source(dsn, "issues", args.rows)
    model = str(build_tiny_model(work / "tiny"))
    ensure_ray()
    plan = open_source(dsn, source_table="issues", id_field="id")

    timed_read(plan, None)  # starts Ray's worker processes, which neither side should pay for
    reads: dict[str, list[tuple[float, int, int]]] = {"sharded": [], "single query": []}
    for _ in range(3):
        reads["sharded"].append(timed_read(plan, None))
        reads["single query"].append(timed_read(plan, 1))

    settings = dict(source=dsn, table="issues_vectors", model=model, dsn=dsn, source_table="issues", sync=True)
    settings["text"] = "{title}\n\n{body}"
    first = run_job(RunSettings.of(**settings))
    repeats = []
    for _ in range(5):  # each one a second run with nothing changed; the median counts
        started = time.perf_counter()
        second = run_job(RunSettings.of(**settings))
        repeats.append(time.perf_counter() - started)
    second_seconds = statistics.median(repeats)

    print(f"\n{args.rows} rows, tiny model, this machine")
    print("| read | blocks | seconds | rows/s |")
    print("|---|---|---|---|")
    best = {}
    for name, runs in reads.items():
        seconds, count, blocks = min(runs)
        assert count == args.rows, f"{name} read {count} rows"
        best[name] = seconds
        print(f"| {name} | {blocks} | {seconds:.2f} | {count / seconds:,.0f} |")
    print(f"sharded / single query rows/s: {best['single query'] / best['sharded']:.2f}x")
    print(
        f"first --sync run: {first.seconds:.1f} s, {first.embedded} embedded; "
        f"second (nothing changed; median of 5): {second_seconds:.3f} s "
        f"(all: {', '.join(f'{r:.3f}' for r in repeats)}), {second.embedded} embedded, {second.unchanged} unchanged"
    )
    print(
        f"second run / first run's reading time ({best['sharded']:.2f} s): "
        f"{second_seconds / best['sharded']:.1%} (target under 10%)"
    )


if __name__ == "__main__":
    main()
