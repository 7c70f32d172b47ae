"""The same texts with 1, 2 and 4 embedding actors, and plain ``SentenceTransformer.encode``.

Every run embeds the same 2,000 texts of the shared corpus with all-MiniLM-L6-v2 into a
fresh collection, through the whole job (Ray Data, actors, pgvector), with ``--actors N``;
Ray is started once, before the first run, and not timed. Plain encode (all the machine's
threads, no Ray work running) is the yardstick: each run's texts/s is printed against it.
The configurations alternate over the rounds (1, 2, 4, 1, 2, 4, ...) so that drift in this
VM's CPU share hits them alike. On a machine with a CUDA GPU, ``--gpu`` adds one run of one
actor on the GPU.

    python bench/scaling.py [--texts 2000] [--actors 1,2,4] [--rounds 2] [--gpu]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from corpus import CORPUS, load_rows, workspace


def plain_encode(texts: list[str], device: str) -> float:
    from sentence_transformers import SentenceTransformer

    from vectorize.models import resolve_model_dir

    model = SentenceTransformer(str(resolve_model_dir("all-MiniLM-L6-v2")[1]), device=device)
    if device == "cuda":
        model.half()
    model.encode(texts[:64], batch_size=64)  # warm
    started = time.perf_counter()
    model.encode(texts, batch_size=64 if device == "cpu" else 512)
    return time.perf_counter() - started


def run_once(source: Path, dsn: str, table: str, actors: int, gpus: float) -> tuple[float, dict]:
    from jobs.launch import run_job
    from vectorize.settings import RunSettings

    settings = RunSettings.of(source=str(source), table=table, dsn=dsn, actors=(actors, actors), gpus_per_actor=gpus)
    started = time.perf_counter()
    summary = run_job(settings)
    return time.perf_counter() - started, summary.to_dict()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--actors", default="1,2,4", help="the pool sizes to compare")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--gpu", action="store_true", help="also one actor on the GPU")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from vectorize.ray_runtime import ensure_ray

    rows = load_rows(args.texts)
    texts = [r["text"] for r in rows]
    source, server = workspace(rows, "vectorize-scaling-")
    dsn = server.get_uri()

    encode_cpu = plain_encode(texts, "cpu")
    encode_gpu = plain_encode(texts, "cuda") if args.gpu else None
    ensure_ray()
    configs = [(f"{n} actor{'s' if n > 1 else ''}, CPU", n, 0.0) for n in (int(a) for a in args.actors.split(","))]
    if args.gpu:
        configs.append(("1 actor, GPU (fp16)", 1, 1.0))
    seconds: dict[str, list[float]] = {name: [] for name, _, _ in configs}
    for round_no in range(1, args.rounds + 1):
        for name, actors, gpus in configs:
            table = f"scaling_{round_no}_{actors}_{int(gpus)}"
            took, summary = run_once(source, dsn, table, actors, gpus)
            if summary["rows_read"] != len(texts):
                sys.exit(f"bench: {name} read {summary['rows_read']} rows of {len(texts)}")
            seconds[name].append(took)
            print(f"round {round_no}, {name}: {took:.1f} s", file=sys.stderr)

    n = len(texts)
    cores = os.cpu_count()
    print(f"\n{n} texts of {CORPUS.name}, all-MiniLM-L6-v2, {cores} CPU cores, {args.rounds} rounds (best of them)\n")
    print("| configuration | job seconds | texts/s | / 1 actor | / plain encode |")
    print("|---|---|---|---|---|")
    base = None
    for name, _actors, gpus in configs:
        best = min(seconds[name])
        rate = n / best
        base = base or rate
        yardstick = n / (encode_gpu if gpus and encode_gpu else encode_cpu)
        print(f"| {name} | {best:.1f} | {rate:.1f} | {rate / base:.2f}x | {rate / yardstick:.2f}x |")
    print(f"| plain encode, CPU ({cores} threads) | {encode_cpu:.1f} | {n / encode_cpu:.1f} | | 1.00x |")
    if encode_gpu:
        print(f"| plain encode, GPU (fp16) | {encode_gpu:.1f} | {n / encode_gpu:.1f} | | |")
    print("\nall runs (s):", json.dumps({name: [round(s, 1) for s in values] for name, values in seconds.items()}))
    server.cleanup()


if __name__ == "__main__":
    main()
