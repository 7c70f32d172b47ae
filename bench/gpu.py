"""On a CUDA GPU: the job's embedding (provider in fp16, batch fitted to the card) against a
bare ``SentenceTransformer.encode`` on the same GPU, for all-MiniLM-L6-v2 on the shared corpus.

Three lines, each with texts/s and the peak GPU memory torch allocated:
- bare encode, fp32, batch 64 (SentenceTransformers' defaults, which is what most people run);
- bare encode, fp16, batch 512 (a well-tuned hand-written loop);
- the provider the job's actors run (``SentenceTransformerModel``: fp16, texts sorted by
  length, the batch size it picks from the free memory).
Then the whole job with one actor on the GPU (Ray Data, the sink into an embedded Postgres),
end to end. The lines alternate over the rounds; the best round of each is printed.

    python bench/gpu.py [--texts 20000] [--rounds 3] [--no-job]
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
    parser.add_argument("--texts", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-job", action="store_true", help="skip the end-to-end job")
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
    }
    # warm: CUDA kernels and the allocator's pools
    fp32.encode(texts[:512], batch_size=64)
    fp16.encode(texts[:512], batch_size=512)
    provider.embed(texts[:512])
    results: dict[str, list[tuple[float, int]]] = {name: [] for name in sides}
    for _ in range(args.rounds):
        for name, fn in sides.items():
            results[name].append(measured(fn))

    job = None
    if not args.no_job:
        from jobs.launch import run_job
        from vectorize.ray_runtime import ensure_ray
        from vectorize.settings import RunSettings

        del fp32, fp16, provider
        torch.cuda.empty_cache()
        source, server = workspace(rows, "vectorize-gpu-")
        ensure_ray()
        started = time.perf_counter()
        summary = run_job(RunSettings.of(source=str(source), table="gpu_bench", dsn=server.get_uri(), actors=(1, 1)))
        job = (time.perf_counter() - started, summary)
        server.cleanup()

    n = len(texts)
    device = torch.cuda.get_device_name()
    print(f"\n{n} texts of {CORPUS.name}, all-MiniLM-L6-v2, {device}, best of {args.rounds} rounds\n")
    print("| side | seconds | texts/s | peak GPU memory MiB | / bare fp32 |")
    print("|---|---|---|---|---|")
    base = None
    for name, runs in results.items():
        seconds, peak = min(runs)
        base = base or seconds
        print(f"| {name} | {seconds:.2f} | {n / seconds:,.0f} | {peak / 2**20:,.0f} | {base / seconds:.2f}x |")
    if job is not None:
        seconds, summary = job
        print(
            f"| whole job, 1 GPU actor (Ray start excluded; actor start, model load, Postgres writes included) "
            f"| {seconds:.1f} | {n / seconds:,.0f} | | {base / seconds:.2f}x |"
        )
        print("\njob summary:", json.dumps({k: summary.to_dict()[k] for k in ("embedded", "failed", "seconds")}))


if __name__ == "__main__":
    main()
