"""Latency and throughput of the Serve application against the bare model, in one run.

One replica serving all-MiniLM-L6-v2 on this machine; single short texts (commit subject
lines of the shared corpus, each sent once, so the cache does not answer) at 1, 8 and 32
concurrent clients over kept-alive connections, 30 s each. In the same run: the no-op route
of the same application (Serve's own overhead), through HAProxy (what clients use) and through
Serve's Python proxy (the default setup), a bare ``model.encode([text])``, and a bare batch
encode of the same texts both by ``model.encode`` and by the provider Serve runs (which packs
texts instead of padding them); requests/s are held against the faster of the two.

    python bench/serve_latency.py [--seconds 30] [--cpus 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import time

from corpus import load_rows

MODEL = "all-MiniLM-L6-v2"


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


def bare_model(texts: list[str], threads: int) -> tuple[float, float, float]:
    """In this process, with no Ray running: p50 of ``model.encode([text])``, and the texts/s of
    one batch encode of 2,000 texts by ``model.encode`` and by the provider Serve runs."""
    import torch

    from vectorize.models import load_sentence_transformer, read_identity, resolve_model_dir
    from vectorize.providers.local import SentenceTransformerProvider

    torch.set_num_threads(threads)
    model = load_sentence_transformer(resolve_model_dir(MODEL)[1], "cpu")
    provider = SentenceTransformerProvider(read_identity(MODEL), MODEL, cpu_threads=threads)
    model.encode(texts[:64], batch_size=64)
    provider.embed(texts[:64])
    singles = []
    for text in texts[:200]:
        started = time.perf_counter()
        model.encode([text])
        singles.append(time.perf_counter() - started)
    batch = texts[:2000]
    started = time.perf_counter()
    model.encode(batch, batch_size=64)
    encode_rate = len(batch) / (time.perf_counter() - started)
    started = time.perf_counter()
    provider.embed(batch)
    return statistics.median(singles), encode_rate, len(batch) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--cpus", type=float, default=float(os.cpu_count() or 2))
    args = parser.parse_args()
    texts = subjects(20_000)
    threads = max(1, int(args.cpus))
    bare_before = bare_model(texts, threads)

    from ray import serve

    from serve.launch import free_port, start_application

    url = start_application(
        model=MODEL, dsn=None, host="127.0.0.1", port=free_port("127.0.0.1"), cpus_per_replica=args.cpus
    )
    python_proxy = f"http://127.0.0.1:{os.environ['RAY_SERVE_FALLBACK_PROXY_HTTP_PORT']}"
    rows = []
    try:
        asyncio.run(load(url, texts[-200:], 4, 3.0, noop=False))  # warm up, on texts not measured
        for name, base in (("no-op, Serve's Python proxy", python_proxy), ("no-op, HAProxy", url)):
            latencies, elapsed = asyncio.run(load(base, texts, 1, min(args.seconds, 10.0), noop=True))
            rows.append((name, 1, latencies, elapsed))
        offset = 0
        for clients in (1, 8, 32):
            latencies, elapsed = asyncio.run(load(url, texts[offset:], clients, args.seconds, noop=False))
            offset += len(latencies)
            rows.append(("embeddings", clients, latencies, elapsed))
        calls = model_calls(url)
    finally:
        serve.shutdown()
    import ray

    ray.shutdown()
    bare_after = bare_model(texts, threads)
    # the faster of the bare measurements, so that drift of this machine does not flatter Serve
    bare_single = min(bare_before[0], bare_after[0])
    bare_batch = max(*bare_before[1:], *bare_after[1:])

    print(f"\n{MODEL}, one replica with {args.cpus:g} CPUs ({threads} torch threads), {args.seconds:g} s each")
    print("| route | clients | p50 ms | p95 ms | p99 ms | requests/s |")
    print("|---|---|---|---|---|---|")
    for name, clients, latencies, elapsed in rows:
        ms = [x * 1000 for x in latencies]
        print(
            f"| {name} | {clients} | {percentile(ms, 0.5):.1f} | {percentile(ms, 0.95):.1f} | "
            f"{percentile(ms, 0.99):.1f} | {len(ms) / elapsed:.1f} |"
        )
    answered = sum(len(r[2]) for r in rows if r[0] == "embeddings")
    for when, (single, encode_rate, provider_rate) in (("before", bare_before), ("after", bare_after)):
        print(
            f"bare model, {when}: encode([text]) p50 {single * 1000:.1f} ms; batch of 2,000: "
            f"model.encode {encode_rate:.1f} texts/s, the provider {provider_rate:.1f} texts/s"
        )
    print(f"embedding requests {answered} (and 4 clients' warm-up) in {calls} model calls")
    noop_p50 = percentile([x * 1000 for x in rows[1][2]], 0.5)
    one_p50 = percentile([x * 1000 for x in rows[2][2]], 0.5)
    rps32 = len(rows[4][2]) / rows[4][3]
    budget = noop_p50 + bare_single * 1000 + 5
    print(f"targets against the faster bare figures: {bare_single * 1000:.1f} ms single, {bare_batch:.1f} texts/s")
    print(f"(a) p50 at 1 client {one_p50:.1f} ms vs no-op p50 + bare single + 5 ms = {budget:.1f} ms")
    print(f"(b) requests/s at 32 clients / bare batch texts/s = {rps32 / bare_batch:.2f} (target 0.6)")


def model_calls(url: str) -> int:
    import httpx

    metrics = httpx.get(f"{url}/metrics").text
    return int(float(re.search(r"^vectorize_model_calls_total (\S+)", metrics, re.M).group(1)))


if __name__ == "__main__":
    main()
