"""On a CUDA GPU: the job's embedding (provider in fp16, batch fitted to the card) against a
bare ``SentenceTransformer.encode`` on the same GPU, for all-MiniLM-L6-v2 on the shared corpus.

Four lines, each with texts/s and the peak GPU memory torch allocated:
- bare encode, fp32, batch 64 (SentenceTransformers' defaults, which is what most people run);
- bare encode, fp16, batch 512 (a well-tuned hand-written loop);
- the provider the job's actors run (``SentenceTransformerModel``: fp16, texts sorted by
  length, the batch size it picks from the free memory);
- the tokenizer alone on the same batches: the share of the CPU work that feeding the card needs.
Then the whole job with one actor on the GPU (Ray Data, the sink into an embedded Postgres),
end to end, and the same job again on the unchanged source (nothing left to embed). The lines
alternate over the rounds; the best round of each is printed. Past 20,000 texts the corpus
repeats, each pass's texts marked so that they stay distinct.

    python bench/gpu.py [--texts 100000] [--rounds 3] [--no-job] [--summaries FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from corpus import CORPUS, load_rows, workspace


def measured(fn) -> tuple[float, int]:
    """Seconds and peak allocated GPU bytes of ``fn()``."""
    import torch

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - started, torch.cuda.max_memory_allocated()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--texts", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-job", action="store_true", help="skip the end-to-end job")
    parser.add_argument("--summaries", help="write the jobs' whole summaries to this JSON file")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer

    from vectorize.models import read_identity, resolve_model_dir
    from vectorize.providers.local import SentenceTransformerModel

    if not torch.cuda.is_available():
        sys.exit("bench/gpu.py needs a CUDA GPU")
    rows = load_rows(args.texts)
    texts = [r["text"] for r in rows]
    model_dir = str(resolve_model_dir("all-MiniLM-L6-v2")[1])
    fp32 = SentenceTransformer(model_dir, device="cuda")
    fp16 = SentenceTransformer(model_dir, device="cuda").half()
    provider = SentenceTransformerModel(read_identity("all-MiniLM-L6-v2"), "all-MiniLM-L6-v2", device="cuda")
    sides = {
        "bare encode, fp32, batch 64": lambda: fp32.encode(texts, batch_size=64),
        "bare encode, fp16, batch 512": lambda: fp16.encode(texts, batch_size=512),
        f"provider (job's actor), fp16, batch {provider.batch_size}": lambda: provider.embed(texts),
        "its tokenizer alone, batches of 512 (no model)": lambda: [
            fp16.tokenize(texts[i : i + 512]) for i in range(0, len(texts), 512)
        ],
    }
    # warm: CUDA kernels and the allocator's pools
    fp32.encode(texts[:512], batch_size=64)
    fp16.encode(texts[:512], batch_size=512)
    provider.embed(texts[:512])
    results: dict[str, list[tuple[float, int]]] = {name: [] for name in sides}
    for _ in range(args.rounds):
        for name, fn in sides.items():
            results[name].append(measured(fn))

    n = len(texts)
    card = torch.cuda.get_device_name()
    print(f"\n{n} texts of {CORPUS.name}, all-MiniLM-L6-v2, {card}, best of {args.rounds} rounds\n")
    print("| side | seconds | texts/s | peak GPU memory MiB | / bare fp32 | / bare fp16 |")
    print("|---|---|---|---|---|---|")
    fp32_seconds, fp16_seconds = (min(results[name])[0] for name in list(sides)[:2])

    def line(name: str, seconds: float, memory: str) -> None:
        ratios = f"{fp32_seconds / seconds:.2f}x | {fp16_seconds / seconds:.2f}x"
        print(f"| {name} | {seconds:.2f} | {n / seconds:,.0f} | {memory} | {ratios} |", flush=True)

    for name, runs in results.items():
        seconds, peak = min(runs)
        line(name, seconds, f"{peak / 2**20:,.0f}")
    if args.no_job:
        return

    from jobs.launch import run_job
    from vectorize.ray_runtime import ensure_ray
    from vectorize.settings import RunSettings

    fp32 = fp16 = provider = None  # the job's actor gets the card's memory
    torch.cuda.empty_cache()
    source, server = workspace(rows, "vectorize-gpu-")
    ensure_ray()
    settings = RunSettings.of(source=str(source), table="gpu_bench", dsn=server.get_uri(), actors=(1, 1))
    summaries = {}
    for name in ("whole job, 1 GPU actor", "unchanged rerun of it"):
        started = time.perf_counter()
        summary = run_job(settings)
        line(name, time.perf_counter() - started, "")
        summaries[name] = summary.to_dict()
    server.cleanup()
    print("\njobs: Ray's start excluded; actor start, model load and Postgres writes included")
    for name, summary in summaries.items():
        print(f"{name}:", json.dumps({k: summary[k] for k in ("embedded", "unchanged", "failed", "seconds")}))
    if args.summaries:
        with open(args.summaries, "w") as fh:
            json.dump(summaries, fh, indent=1, default=str)


if __name__ == "__main__":
    main()
