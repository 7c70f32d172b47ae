"""Latency and throughput of the Serve application against the bare model, in one run.

One replica serving all-MiniLM-L6-v2 on this machine; single short texts (commit subject
lines of the shared corpus, each sent once, so the cache does not answer) at 1, 8 and 32
concurrent clients over kept-alive connections, 30 s each. In the same run: the no-op route
of the same application (Serve's own overhead), a bare ``model.encode([text])`` and a bare
batch encode of the same texts.

    python bench/serve_latency.py [--seconds 30] [--cpus 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import time

from corpus import load_rows


def subjects(count: int) -> list[str]:
    seen: dict[str, None] = {}
    for row in load_rows(20_000):
        line = row["text"].strip().splitlines()[0][:120] if row["text"].strip() else ""
        if line:
            seen.setdefault(line)
        if len(seen) >= count:
            break
    return list(seen)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def load(url: str, texts: list[str], clients: int, seconds: float, noop: bool) -> tuple[list[float], float]:
    """``clients`` loops, each sending one request after the other on its own kept-alive
    connection (aiohttp: a lighter client than httpx, so the load takes less of this machine)."""
    import aiohttp

    latencies: list[float] = []
    position = 0
    deadline = time.perf_counter() + seconds

    async def one_client(http: aiohttp.ClientSession) -> None:
        nonlocal position
        while time.perf_counter() < deadline:
            text = texts[position % len(texts)]
            position += 1
            started = time.perf_counter()
            if noop:
                answer = await http.get(f"{url}/v1/noop")
            else:
                answer = await http.post(f"{url}/v1/embeddings", json={"input": text})
            await answer.read()
            answer.raise_for_status()
            latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=clients, keepalive_timeout=60)
    async with aiohttp.ClientSession(connector=connector) as http:
        begun = time.perf_counter()
        await asyncio.gather(*(one_client(http) for _ in range(clients)))
        elapsed = time.perf_counter() - begun
    return latencies, elapsed


def bare_model(texts: list[str], threads: int) -> tuple[float, float]:
    """p50 of ``encode([text])`` and texts/s of one batch encode, in this process."""
    import torch

    from vectorize.models import load_sentence_transformer, resolve_model_dir

    torch.set_num_threads(threads)
    model = load_sentence_transformer(resolve_model_dir("all-MiniLM-L6-v2")[1], "cpu")
    model.encode(texts[:64], batch_size=64)
    singles = []
    for text in texts[:200]:
        started = time.perf_counter()
        model.encode([text])
        singles.append(time.perf_counter() - started)
    batch = texts[:2000]
    started = time.perf_counter()
    model.encode(batch, batch_size=64)
    return statistics.median(singles), len(batch) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--cpus", type=float, default=float(os.cpu_count() or 2))
    args = parser.parse_args()
    os.environ.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")
    texts = subjects(20_000)
    threads = max(1, int(args.cpus))
    bare_single, bare_batch = bare_model(texts, threads)

    from jobs.ray_runtime import ensure_ray

    ensure_ray()
    from ray import serve

    from serve.app import EmbeddingService

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    application = EmbeddingService.options(ray_actor_options={"num_cpus": args.cpus}).bind(
        model="all-MiniLM-L6-v2", threads=threads, api_keys=[]
    )
    serve.run(application, name="vectorize", route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    rows = []
    try:
        asyncio.run(load(url, texts[-200:], 4, 3.0, noop=False))  # warm up, on texts not measured
        noop, noop_s = asyncio.run(load(url, texts, 1, args.seconds, noop=True))
        rows.append(("no-op route", 1, noop, noop_s))
        offset = 0
        for clients in (1, 8, 32):
            latencies, elapsed = asyncio.run(load(url, texts[offset:], clients, args.seconds, noop=False))
            offset += len(latencies)
            rows.append(("embeddings", clients, latencies, elapsed))
    finally:
        serve.shutdown()

    print(f"\nall-MiniLM-L6-v2, one replica with {args.cpus:g} CPUs ({threads} torch threads), {args.seconds:g} s each")
    print("| route | clients | p50 ms | p95 ms | p99 ms | requests/s |")
    print("|---|---|---|---|---|---|")
    for name, clients, latencies, elapsed in rows:
        ms = [x * 1000 for x in latencies]
        print(
            f"| {name} | {clients} | {percentile(ms, 0.5):.1f} | {percentile(ms, 0.95):.1f} | "
            f"{percentile(ms, 0.99):.1f} | {len(ms) / elapsed:.1f} |"
        )
    print(f"bare model.encode([text]) p50: {bare_single * 1000:.1f} ms; bare batch encode: {bare_batch:.1f} texts/s")
    noop_p50 = percentile([x * 1000 for x in rows[0][2]], 0.5)
    one_p50 = percentile([x * 1000 for x in rows[1][2]], 0.5)
    rps32 = len(rows[3][2]) / rows[3][3]
    budget = noop_p50 + bare_single * 1000 + 5
    print(f"(a) p50 at 1 client {one_p50:.1f} ms vs no-op p50 + bare single + 5 ms = {budget:.1f} ms")
    print(f"(b) requests/s at 32 clients / bare batch texts/s = {rps32 / bare_batch:.2f} (target 0.6)")


if __name__ == "__main__":
    main()
