"""Latency and throughput of the Serve application against the bare model, side by side.

One replica serving all-MiniLM-L6-v2 on this machine; single short texts (commit subject
lines of the shared corpus, each sent once, so the cache does not answer) at 1, 8 and 32
concurrent clients over kept-alive connections, 30 s each. Beside them: the no-op route of the
same application (``GET /v1/models``, no model work: Serve's own overhead), through HAProxy
(what clients use) and through Serve's Python proxy (the default setup); a bare
``model.encode([text])``; and a bare batch encode of the same texts by ``model.encode`` and by
the provider Serve runs (which packs texts instead of padding them), requests/s being held
against the faster of the two.

This machine's speed drifts by tens of percent within minutes, so the run goes in rounds (3 by
default): each round measures the bare model (in this process, the replica idle), then the
no-op route and the three client counts for a third of their time each. Each target is checked
within each round, on figures taken a minute apart; the table pools the rounds.

    python bench/serve_latency.py [--seconds 30] [--rounds 3] [--cpus 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import time
from dataclasses import dataclass

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
                answer = await http.get(f"{url}/v1/models")  # no model work: Serve's own overhead
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


class BareModel:
    """The model with no Serve around it, in this process: ``model.encode`` and the provider."""

    def __init__(self, threads: int) -> None:
        import torch

        from vectorize.models import load_sentence_transformer, read_identity, resolve_model_dir
        from vectorize.providers.local import SentenceTransformerModel

        torch.set_num_threads(threads)
        self.model = load_sentence_transformer(resolve_model_dir(MODEL)[1], "cpu")
        self.provider = SentenceTransformerModel(read_identity(MODEL), MODEL, cpu_threads=threads)

    def measure(self, texts: list[str]) -> tuple[float, float, float]:
        """p50 of ``model.encode([text])``, and texts/s of one batch encode of 1,000 texts by
        ``model.encode`` and by the provider."""
        self.model.encode(texts[:64], batch_size=64, show_progress_bar=False)
        self.provider.embed(texts[:64])
        singles = []
        for text in texts[:100]:
            started = time.perf_counter()
            self.model.encode([text], show_progress_bar=False)
            singles.append(time.perf_counter() - started)
        batch = texts[:1000]
        started = time.perf_counter()
        self.model.encode(batch, batch_size=64, show_progress_bar=False)
        encode_rate = len(batch) / (time.perf_counter() - started)
        started = time.perf_counter()
        self.provider.embed(batch)
        return statistics.median(singles), encode_rate, len(batch) / (time.perf_counter() - started)


@dataclass
class Round:
    bare_single: float  # seconds, p50 of model.encode([text])
    encode_rate: float  # texts/s
    provider_rate: float  # texts/s
    slices: dict[tuple[str, int], tuple[list[float], float]]  # (route, clients) -> latencies, seconds

    def p50_ms(self, route: str, clients: int) -> float:
        return percentile(self.slices[(route, clients)][0], 0.5) * 1000

    def rate(self, route: str, clients: int) -> float:
        latencies, elapsed = self.slices[(route, clients)]
        return len(latencies) / elapsed


NOOP_PYTHON, NOOP, EMBEDDINGS = "no-op, Serve's Python proxy", "no-op, HAProxy", "embeddings"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="per client count, over all rounds")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cpus", type=float, default=float(os.cpu_count() or 2))
    args = parser.parse_args()
    texts = subjects(20_000)
    threads = max(1, int(args.cpus))
    bare = BareModel(threads)
    share = args.seconds / args.rounds

    from ray import serve

    from serve.launch import free_port, start_application

    url = start_application(
        models=[MODEL], dsn=None, host="127.0.0.1", port=free_port("127.0.0.1"), cpus_per_replica=args.cpus
    )
    python_proxy = f"http://127.0.0.1:{os.environ['RAY_SERVE_FALLBACK_PROXY_HTTP_PORT']}"
    rounds: list[Round] = []
    offset = 0
    try:
        asyncio.run(load(url, texts[-200:], 4, 3.0, noop=False))  # warm up, on texts not measured
        for _ in range(args.rounds):
            single, encode_rate, provider_rate = bare.measure(texts)
            slices = {}
            for name, base in ((NOOP_PYTHON, python_proxy), (NOOP, url)):
                slices[(name, 1)] = asyncio.run(load(base, texts, 1, min(share, 5.0), noop=True))
            for clients in (1, 8, 32):
                slices[(EMBEDDINGS, clients)] = asyncio.run(load(url, texts[offset:-200], clients, share, noop=False))
                offset += len(slices[(EMBEDDINGS, clients)][0])
            rounds.append(Round(single, encode_rate, provider_rate, slices))
        calls = model_calls(url)
    finally:
        serve.shutdown()
    report(rounds, calls, args)


def report(rounds: list[Round], calls: int, args: argparse.Namespace) -> None:
    threads = max(1, int(args.cpus))
    print(f"\n{MODEL}, one replica with {args.cpus:g} CPUs ({threads} torch threads), {args.seconds:g} s per row")
    print("| route | clients | p50 ms | p95 ms | p99 ms | requests/s |")
    print("|---|---|---|---|---|---|")
    for key in rounds[0].slices:
        latencies = [x * 1000 for r in rounds for x in r.slices[key][0]]
        elapsed = sum(r.slices[key][1] for r in rounds)
        print(
            f"| {key[0]} | {key[1]} | {percentile(latencies, 0.5):.1f} | {percentile(latencies, 0.95):.1f} | "
            f"{percentile(latencies, 0.99):.1f} | {len(latencies) / elapsed:.1f} |"
        )
    answered = sum(len(r.slices[(EMBEDDINGS, c)][0]) for r in rounds for c in (1, 8, 32))
    print(f"embedding requests {answered} (and 4 clients' warm-up) in {calls} model calls")
    print("\n| round | bare encode([text]) p50 ms | model.encode texts/s | provider texts/s "
          "| (a) 1-client p50 ms | (a) budget ms | (b) 32 clients req/s | (b) ratio |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    met_a = met_b = 0
    for i, r in enumerate(rounds, 1):
        budget = r.p50_ms(NOOP, 1) + r.bare_single * 1000 + 5
        ratio = r.rate(EMBEDDINGS, 32) / max(r.encode_rate, r.provider_rate)
        met_a += r.p50_ms(EMBEDDINGS, 1) <= budget
        met_b += ratio >= 0.6
        print(
            f"| {i} | {r.bare_single * 1000:.1f} | {r.encode_rate:.1f} | {r.provider_rate:.1f} | "
            f"{r.p50_ms(EMBEDDINGS, 1):.1f} | {budget:.1f} | {r.rate(EMBEDDINGS, 32):.1f} | {ratio:.2f} |"
        )
    print("(a) p50 at 1 client <= no-op p50 + bare encode([text]) p50 + 5 ms")
    print("(b) requests/s at 32 clients >= 0.6 x the faster bare batch texts/s")
    print(f"(a) met in {met_a} of {len(rounds)} rounds; (b) met in {met_b} of {len(rounds)} rounds")


def model_calls(url: str) -> int:
    import httpx

    metrics = httpx.get(f"{url}/metrics").text
    return int(float(re.search(r"^vectorize_model_calls_total\{[^}]*\} (\S+)", metrics, re.M).group(1)))


if __name__ == "__main__":
    main()
