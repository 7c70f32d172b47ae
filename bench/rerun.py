"""A rerun with nothing to embed, with the default model: the daily run.

The first ``--rows`` records of the shared corpus go to a file; a first run embeds them with
the default model into an embedded Postgres kept under ~/.cache/vectorize-bench (done once,
minutes on a CPU). Then, in rounds, each a fresh ``vectorize run`` process as a user starts it
(Python, the embedded Postgres, Ray where the run needs it, the pipeline), side by side:

- the same file rewritten (a blank line added: the same rows, another digest), so that every
  row is read, prepared and looked up, and none is embedded;
- the file unchanged since that run, which the run knows from its recorded state without
  reading a row or starting Ray;
- a file of one of those rows: what any run that reads pays before and after its rows.

A last run of the rewritten file with ``PYTHONPROFILEIMPORTTIME`` set says whether the driver or
any Ray worker imported torch, transformers or sentence_transformers.

    python bench/rerun.py [--rows 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from corpus import load_rows

CACHE = Path.home() / ".cache" / "vectorize-bench"
VECTORIZE = Path(sys.executable).with_name("vectorize")
HEAVY = ("torch", "transformers", "sentence_transformers")


def run(source: Path, data_dir: Path, table: str, env: dict | None = None) -> tuple[float, dict, str]:
    command = [str(VECTORIZE), "run", str(source), "--data-dir", str(data_dir), "--table", table, "--json"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"bench: {' '.join(command)} failed: {done.stdout.strip()} {done.stderr.strip()[-2000:]}")
    return seconds, json.loads(done.stdout), done.stderr


def imported_heavy(importtime_lines: str) -> set[str]:
    """The heavy libraries named as top-level imports in ``-X importtime`` output."""
    found = set()
    for line in importtime_lines.splitlines():
        if line.startswith("import time:") and line.rsplit("|", 1)[-1].strip() in HEAVY:
            found.add(line.rsplit("|", 1)[-1].strip())
    return found


def worker_imports() -> set[str]:
    """What the Ray workers of the newest local session imported, from their stderr logs."""
    logs = Path("/tmp/ray/session_latest/logs")
    found: set[str] = set()
    for path in logs.glob("worker-*.err"):
        found |= imported_heavy(path.read_text(errors="replace"))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    folder = CACHE / f"rerun-{args.rows}"
    folder.mkdir(parents=True, exist_ok=True)
    source, one_row, data_dir, table = folder / "texts.jsonl", folder / "one.jsonl", folder / "pgdata", "rerun"
    if not source.exists():
        rows = load_rows(args.rows)
        source.with_suffix(".tmp").write_text("".join(json.dumps(row) + "\n" for row in rows))
        source.with_suffix(".tmp").rename(source)
    one_row.write_text(source.read_text().split("\n", 1)[0] + "\n")

    first_s, first, _ = run(source, data_dir, table)
    if first["embedded"]:
        print(f"first run: {first['embedded']:,} texts embedded in {first_s:.0f} s (kept in {folder})")

    sides = ("rewritten", "unchanged", "one row")
    times: dict[str, list[float]] = {side: [] for side in sides}
    for _ in range(args.rounds):
        for side in ("one row", "rewritten", "unchanged"):  # the one-row run leaves the big file's state unrecorded
            if side == "rewritten":
                with source.open("a") as fh:
                    fh.write("\n")
            seconds, summary, _ = run(one_row if side == "one row" else source, data_dir, table)
            if summary["embedded"]:
                sys.exit(f"bench: the {side} run embedded {summary['embedded']} texts; it should embed none")
            times[side].append(seconds)

    with source.open("a") as fh:
        fh.write("\n")
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    _, summary, driver_err = run(source, data_dir, table, env)
    driver, workers = imported_heavy(driver_err), worker_imports()

    print(f"\n{args.rows:,} rows from a file, the default model, nothing to embed; {args.rounds} rounds\n")
    print("| round | rewritten file s | unchanged file s | one-row file s | rewritten / one-row |")
    print("|---|---|---|---|---|")
    rounds = list(zip(*(times[side] for side in sides), strict=True))
    medians = tuple(statistics.median(times[side]) for side in sides)
    for label, (rewritten, unchanged, one) in [*((str(i), r) for i, r in enumerate(rounds, 1)), ("median", medians)]:
        print(f"| {label} | {rewritten:.1f} | {unchanged:.1f} | {one:.1f} | {rewritten / one:.2f}x |")
    print(f"\nthe rewritten file's run: {summary['unchanged']:,} of {summary['rows_read']:,} rows unchanged, "
          f"{summary['embedded']} embedded")  # fmt: skip
    print(f"the driver imported: {', '.join(sorted(driver)) or 'none of ' + ', '.join(HEAVY)}")
    print(f"the Ray workers imported: {', '.join(sorted(workers)) or 'none of ' + ', '.join(HEAVY)}")


if __name__ == "__main__":
    main()
