"""Search on a 100,000-row collection, each storage and mode side by side: recall@10 against
the exact answer, latency, table and index size, index build time.

The vectors are real: the first ``--base`` commit messages of the shared corpus (by default all
but the last ``--queries``) embedded once with all-MiniLM-L6-v2 (cached in ~/.cache), and
replicated to ``--rows`` with a random perturbation each (cosine ~0.94 to its original): the
corpus holds 20,000 texts, and embedding it is minutes, not the hour that 100,000 would take on
two cores. Queries are the corpus's other commit messages, embedded the same way. The exact
answer is computed in numpy over every row.

Each storage is built through vectorize's own path (registry, schema, index build); each query
runs through the search the CLI and Serve use, the variants alternating query by query. A
filter matches 1% or 10% of rows; "iterative" is vectorize's filtered search (exact over the
matching rows when fewer than 2,000 are expected to match, else pgvector's iterative index scan), "plain" the
same filtered query as pgvector runs it by default (ef_search 40, no iterative scan).

An HNSW graph is random (each row's level), so one build's recall differs from the next
by more than halfvec's rounding moves it: vector and halfvec are built ``--builds`` times each,
alternating, and their recall is compared as the mean over the builds.

    python bench/search.py [--rows 100000] [--base 19000] [--queries 1000] [--builds 5]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time
from pathlib import Path

import numpy as np
from corpus import CORPUS, load_rows, workspace

CACHE = Path.home() / ".cache" / "vectorize-bench"
SPREAD = 0.35  # the norm of each copy's perturbation of its unit vector
K = 10


def embedded(texts: list[str], name: str) -> np.ndarray:
    """MiniLM vectors of ``texts``, cached under ``name``."""
    path = CACHE / f"{name}-{len(texts)}-{hashlib.sha256(''.join(texts).encode()).hexdigest()[:12]}.npy"
    if path.exists():
        return np.load(path)
    from sentence_transformers import SentenceTransformer

    from vectorize.models import DEFAULT_MODEL, resolve_model_dir

    model = SentenceTransformer(str(resolve_model_dir(DEFAULT_MODEL)[1]), device="cpu")
    vectors = model.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors.astype(np.float32))
    return vectors.astype(np.float32)


def replicated(base: np.ndarray, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """``rows`` unit vectors, each a perturbed copy of a base vector; and which base each copies."""
    rng = np.random.default_rng(0)
    origin = np.arange(rows) % len(base)
    noise = rng.standard_normal((rows, base.shape[1])).astype(np.float32)
    noise *= SPREAD / np.linalg.norm(noise, axis=1, keepdims=True)
    vectors = base[origin] + noise
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), origin


def metadata(i: int) -> dict:
    return {"p1": i % 100 == 0, "p10": i % 10 == 0}


def fill(dsn: str, table: str, storage, vectors: np.ndarray, texts: list[str], origin: np.ndarray) -> float:
    """The collection, made and indexed as a run makes it; seconds the index build took."""
    import psycopg
    from pgvector import HalfVector
    from pgvector.psycopg import register_vector

    from vectorize.identity import ModelIdentity
    from vectorize.store.collection import Collection
    from vectorize.store.finishing import build_vector_index
    from vectorize.store.registry import prepare_collection

    dims = vectors.shape[1]
    identity = ModelIdentity("bench", "bench", dims, True, "", 256)
    collection = Collection(table)
    chosen = prepare_collection(dsn, collection, identity, "bench", storage)
    as_value = HalfVector if chosen.vector_type == "halfvec" else np.ascontiguousarray
    with psycopg.connect(dsn, autocommit=True) as conn:
        register_vector(conn)
        with conn.cursor().copy(
            f'COPY "{table}" (id, text, text_sha256, model, embedding, metadata) FROM STDIN (FORMAT BINARY)'
        ) as copy:
            copy.set_types(["text", "text", "text", "text", chosen.vector_type, "jsonb"])
            for i, vector in enumerate(vectors):
                text = texts[origin[i]]
                copy.write_row((f"r{i}", text, hashlib.sha256(text.encode()).hexdigest(), identity.key,
                                as_value(vector), metadata(i)))  # fmt: skip
        started = time.perf_counter()
        build_vector_index(conn, collection, chosen, dims)
        return time.perf_counter() - started


def sizes(dsn: str, table: str) -> tuple[float, float]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        whole, index = conn.execute(
            "SELECT pg_table_size(%s), coalesce(pg_relation_size(to_regclass(%s)), 0)",
            (f'"{table}"', f'"{table}_embedding_hnsw"'),
        ).fetchone()
    return whole / 2**20, index / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--base", type=int, default=19_000, help="commit messages embedded, then replicated")
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--builds", type=int, default=5, help="HNSW builds of vector and of halfvec, for recall")
    args = parser.parse_args()

    import psycopg
    from pgvector.psycopg import register_vector

    from vectorize.store.search import nearest
    from vectorize.store.storage import StorageRequest

    rows = load_rows(args.base + args.queries)
    texts = [r["text"][:2000] for r in rows]
    base = embedded(texts[: args.base], "minilm")
    asked = embedded(texts[args.base :], "minilm-queries")
    vectors, origin = replicated(base, args.rows)
    first_words = [" ".join(t.split()[:3]) for t in texts[args.base :]]
    _, server = workspace([], "vectorize-bench-search-")
    dsn = server.get_uri()

    storages = {
        "vector": StorageRequest(vector_type="vector"),
        "halfvec": StorageRequest(vector_type="halfvec"),
        "hnsw-bq": StorageRequest(vector_type="vector", index="hnsw-bq"),
        "exact": StorageRequest(vector_type="vector", index="none"),
    }
    built = {}
    for name, request in storages.items():
        table = f"bench_{name.replace('-', '_')}"
        seconds = fill(dsn, table, request, vectors, texts, origin)
        built[name] = (table, seconds, *sizes(dsn, table))
        print(f"built {name}: index {seconds:.1f} s", flush=True)

    from vectorize.store.collection import Collection
    from vectorize.store.registry import registered

    truth_all = np.argsort(-(asked @ vectors.T), axis=1)[:, :K]
    masks = {"p1": np.arange(args.rows) % 100 == 0, "p10": np.arange(args.rows) % 10 == 0}
    truth_filtered = {}
    for key, mask in masks.items():
        ids = np.flatnonzero(mask)
        truth_filtered[key] = ids[np.argsort(-(asked @ vectors[ids].T), axis=1)[:, :K]]

    variants = [
        ("vector", "vector", None, "vector"),
        ("halfvec", "halfvec", None, "vector"),
        ("hnsw-bq + rerank", "hnsw-bq", None, "vector"),
        ("exact scan", "exact", None, "vector"),
        ("filter 1%, iterative", "vector", "p1", "vector"),
        ("filter 1%, plain", "vector", "p1", "plain"),
        ("filter 10%, iterative", "vector", "p10", "vector"),
        ("filter 10%, plain", "vector", "p10", "plain"),
        ("hybrid", "vector", None, "hybrid"),
    ]
    latencies = {v[0]: [] for v in variants}
    recalls = {v[0]: [] for v in variants}
    full_k = {v[0]: 0 for v in variants}
    with psycopg.connect(dsn, autocommit=True) as conn:
        register_vector(conn)
        storage_of = {name: registered(conn, Collection(built[name][0])).storage for name in storages}
        for q in range(args.queries):
            for label, name, filtered, mode in variants:
                table = built[name][0]
                where = {filtered: True} if filtered else None
                started = time.perf_counter()
                if mode == "plain":
                    found = conn.execute(
                        f'SELECT id FROM "{table}" WHERE metadata @> %s::jsonb ORDER BY embedding <=> %s LIMIT {K}',
                        (json.dumps(where), asked[q]),
                    ).fetchall()
                    ids = [int(i[1:]) for (i,) in found]
                else:
                    hits = nearest(conn, Collection(table), storage_of[name], asked[q], K, where, mode, first_words[q])
                    ids = [int(h.id[1:]) for h in hits]
                latencies[label].append(time.perf_counter() - started)
                truth = truth_filtered[filtered][q] if filtered else truth_all[q]
                recalls[label].append(len(set(ids) & set(truth.tolist())) / K)
                full_k[label] += len(ids) == K
        build_recalls = {name: [statistics.mean(recalls[name])] for name in ("vector", "halfvec")}
        for build in range(1, args.builds):
            for name in build_recalls:
                table = f"bench_{name}_{build}"
                fill(dsn, table, storages[name], vectors, texts, origin)
                storage = registered(conn, Collection(table)).storage
                found = [nearest(conn, Collection(table), storage, asked[q], K) for q in range(args.queries)]
                build_recalls[name].append(
                    statistics.mean(
                        len({int(h.id[1:]) for h in hits} & set(truth_all[q].tolist())) / K
                        for q, hits in enumerate(found)
                    )
                )
                conn.execute(f'DROP TABLE "{table}"')
                recall = build_recalls[name][-1]
                print(f"built {name} again ({build + 1} of {args.builds}): recall {recall:.3f}", flush=True)
    server.cleanup()

    print(f"\n{args.rows} rows ({args.base} commit messages embedded by all-MiniLM-L6-v2, 384 dims, replicated "
          f"with perturbations), {args.queries} queries, k={K}, this machine\n")  # fmt: skip
    print("| search | recall@10 | returns k | p50 ms | p95 ms | table MiB | index MiB | index build s |")
    print("|---|---|---|---|---|---|---|---|")
    for label, name, _, mode in variants:
        ms = sorted(1000 * s for s in latencies[label])
        p95 = ms[min(len(ms) - 1, int(0.95 * len(ms)))]
        _, seconds, table_mib, index_mib = built[name]
        recall = "—" if mode == "hybrid" else f"{statistics.mean(recalls[label]):.3f}"
        print(f"| {label} | {recall} | {full_k[label] / args.queries:.0%} | {statistics.median(ms):.1f} | {p95:.1f} "
              f"| {table_mib:.0f} | {index_mib:.0f} | {seconds:.1f} |")  # fmt: skip
    p50 = {label: statistics.median(latencies[label]) for label in latencies}
    sized = {name: built[name][3] for name in storages}
    recall_gap = statistics.mean(build_recalls["halfvec"]) - statistics.mean(build_recalls["vector"])
    spread = ", ".join(f"{name} {min(r):.3f}..{max(r):.3f}" for name, r in build_recalls.items())
    print(
        f"\nhalfvec / vector: recall {recall_gap:+.3f} (mean of {args.builds} builds each; "
        f"one build's recall: {spread}), index {sized['halfvec'] / sized['vector']:.2f}x"
    )
    print(f"hnsw-bq / vector: index {sized['hnsw-bq'] / sized['vector']:.2f}x")
    for share in ("1%", "10%"):
        print(f"filter {share} iterative / unfiltered p50: {p50[f'filter {share}, iterative'] / p50['vector']:.2f}x")
    print(f"corpus: {CORPUS.name}")


if __name__ == "__main__":
    main()
