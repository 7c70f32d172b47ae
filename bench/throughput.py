"""Plain SentenceTransformer.encode vs the whole job (file → Ray Data → actors → pgvector).

Both sides embed the same texts (2,000 unless told) of the shared corpus with all-MiniLM-L6-v2 on this
machine. This VM's CPU time is partly stolen by its host and drifts a lot from minute to
minute, so the sides alternate (encode, job, encode, job, ...) and each round's ratio is
printed as well as the ratio of the totals. Plain encode runs with no Ray processes alive;
the job's time runs from the call of ``run_job`` to its return (actor start, model load,
writing, index build included); starting Ray is timed on its own line, and so are the job's
fixed costs: from its call to the first batch reaching the model, and from the last batch's
vectors to its return.

    python bench/throughput.py [--texts 2000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

from corpus import CORPUS, load_rows, workspace


class CpuSampler:
    """CPU seconds spent by role during a job: this process, the embedding actors, other Ray
    processes and the Postgres server. Processes are sampled twice a second, so actors that
    Ray stops at the end of the job still count."""

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self._seen: dict[int, tuple[str, float, float]] = {}  # pid -> (role, first, last)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _role(self, proc) -> str:
        """The Ray process title (``ray::_StatsActor``, ``raylet``, ...) or the script it runs."""
        words = proc.cmdline() or [proc.name()]
        if "EmbedBatches" in " ".join(words):
            return "embedding actors"
        first = words[0]
        if first.startswith("ray::"):
            return first.split(" ")[0].split("(")[0]
        script = next((w for w in words[1:] if w.endswith(".py")), first)
        return Path(script).name

    def _sample(self) -> None:
        psutil = self._psutil
        me = psutil.Process()
        procs = [(me, "driver"), *((p, None) for p in me.children(recursive=True))]
        postgres = [p for p in psutil.process_iter(["name"]) if (p.info["name"] or "").startswith("postgres")]
        procs += [(p, "postgres") for p in postgres]
        for proc, role in procs:
            try:
                seconds = sum(proc.cpu_times()[:2])
                role = role or self._role(proc)
            except psutil.Error:
                continue
            first = self._seen.get(proc.pid, (role, seconds, seconds))[1]
            self._seen[proc.pid] = (role, first, seconds)

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            self._sample()

    def __enter__(self) -> CpuSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def by_role(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for role, first, last in self._seen.values():
            out[role] = out.get(role, 0.0) + last - first
        return out


def steal_ticks() -> int:
    with open("/proc/stat") as fh:
        return int(fh.readline().split()[8])


def plain_encode(texts: list[str]) -> float:
    from sentence_transformers import SentenceTransformer

    from vectorize.models import resolve_model_dir

    model = SentenceTransformer(str(resolve_model_dir("all-MiniLM-L6-v2")[1]), device="cpu")
    started = time.perf_counter()
    model.encode(texts, batch_size=64)
    return time.perf_counter() - started


def run_job_once(source: Path, dsn: str, table: str) -> tuple[float, float, dict, dict, tuple[float, float]]:
    import ray

    from jobs.launch import run_job
    from vectorize.ray_runtime import ensure_ray
    from vectorize.settings import RunSettings

    started = time.perf_counter()
    ensure_ray()
    ray_start = time.perf_counter() - started
    with CpuSampler() as sampler:
        called = time.time()
        started = time.perf_counter()
        summary = run_job(RunSettings.of(source=str(source), table=table, dsn=dsn))
        seconds = time.perf_counter() - started
    ray.shutdown()
    batches = summary.batch_metrics
    fixed = (batches.model_started_at - called, called + seconds - batches.model_ended_at)
    return seconds, ray_start, summary.to_dict(), sampler.by_role(), fixed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    rows = load_rows(args.texts)
    texts = [r["text"] for r in rows]
    source, server = workspace(rows, "vectorize-bench-")
    dsn = server.get_uri()

    results = []
    for round_no in range(1, args.rounds + 1):
        steal0 = steal_ticks()
        encode_s = plain_encode(texts)
        steal1 = steal_ticks()
        job_s, ray_start_s, summary, cpu, fixed = run_job_once(source, dsn, f"bench_round_{round_no}")
        steal2 = steal_ticks()
        results.append((encode_s, job_s, ray_start_s, summary, cpu, steal1 - steal0, steal2 - steal1, fixed))
        print(f"round {round_no} done: encode {encode_s:.1f}s, job {job_s:.1f}s", file=sys.stderr)

    n = len(texts)
    print(f"\n{n} texts of {CORPUS.name}, all-MiniLM-L6-v2, CPU ({os.cpu_count()} cores), {args.rounds} rounds\n")
    print(
        "| round | plain encode texts/s | job texts/s | ratio | Ray start s | call to model s | model to return s "
        "| steal s (encode / job) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    hz = os.sysconf("SC_CLK_TCK")
    for i, (encode_s, job_s, ray_s, _summary, _cpu, steal_e, steal_j, fixed) in enumerate(results, 1):
        print(
            f"| {i} | {n / encode_s:.1f} | {n / job_s:.1f} | {encode_s / job_s:.2f}x | {ray_s:.1f} "
            f"| {fixed[0]:.1f} | {fixed[1]:.1f} | {steal_e / hz:.0f} / {steal_j / hz:.0f} |"
        )
    total_encode = sum(r[0] for r in results)
    total_job = sum(r[1] for r in results)
    total_job_with_ray = sum(r[1] + r[2] for r in results)
    print(
        f"| all | {n * len(results) / total_encode:.1f} | {n * len(results) / total_job:.1f} "
        f"| **{total_encode / total_job:.2f}x** | with Ray start: {total_encode / total_job_with_ray:.2f}x | | | |"
    )
    last = results[-1]
    print(
        "\nlast job's summary:",
        json.dumps(
            {k: last[3][k] for k in ("rows_read", "embedded", "reused", "failed", "truncated", "tokens", "seconds")}
        ),
    )
    print("\nCPU seconds during each job, by process (Ray workers by their process title):")
    roles = sorted({role for result in results for role in result[4]}, key=lambda r: -results[-1][4].get(r, 0))
    print("| process | " + " | ".join(f"round {i}" for i in range(1, len(results) + 1)) + " |")
    print("|---|" + "---|" * len(results))
    for role in roles:
        print(f"| {role} | " + " | ".join(f"{result[4].get(role, 0.0):.1f}" for result in results) + " |")
    server.cleanup()


if __name__ == "__main__":
    main()
