"""One benchmark script of ``bench/`` run from two versions of the code in alternating rounds,
each in a fresh process on the same machine: the figures of each side, and their ratio.

The base version is checked out from git into a temporary worktree; the other side is this
checkout as it is. Each side's Python path (and so every Ray worker's) starts at its own tree.
The script's table rows (``| a | b | ... |``) are matched by their first ``--key`` cells, and
the ``--column`` named is compared.

    python bench/versions.py --base HEAD --column rows/s -- pipeline_ceiling.py --rows 200000
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from corpus import CORPUS

ROOT = Path(__file__).resolve().parent.parent


def table_rows(output: str, column: str, keys: int) -> dict[tuple[str, ...], float]:
    """``column`` of every table row in ``output``, by the row's first ``keys`` cells."""
    found: dict[tuple[str, ...], float] = {}
    header: list[str] | None = None
    for line in output.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
        elif column in header and not set(cells[0]) <= set("-"):
            try:
                found[tuple(cells[:keys])] = float(cells[header.index(column)].replace(",", "").rstrip("x"))
            except (ValueError, IndexError):
                continue
    return found


def run_side(tree: Path, script: list[str]) -> str:
    path = os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = {**os.environ, "PYTHONPATH": path, "BENCH_CORPUS": str(CORPUS)}  # the base tree has no ../shared
    done = subprocess.run([sys.executable, *script], cwd=tree / "bench", env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"bench: {script[0]} failed in {tree}:\n{done.stderr[-2000:]}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", default="HEAD", help="the git revision to compare this checkout with")
    parser.add_argument("--column", required=True, help="the table column to compare, like rows/s")
    parser.add_argument("--key", type=int, default=2, help="how many leading cells name a row")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("script", nargs=argparse.REMAINDER, help="-- SCRIPT [ARGS]: a script of bench/")
    args = parser.parse_args()
    script = [part for part in args.script if part != "--"]
    if not script:
        parser.error("name the bench script after --")
    from vectorize.ray_runtime import starts_a_local_ray

    if os.environ.get("RAY_ADDRESS") or not starts_a_local_ray():
        sys.exit("bench: a Ray cluster runs here (or RAY_ADDRESS is set): both sides would join it, and its workers "
                 "import one version of the code for both; stop it or unset RAY_ADDRESS")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="vectorize-base-") as folder:
        base_tree = Path(folder) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(base_tree), args.base], cwd=ROOT, check=True,
                       capture_output=True)  # fmt: skip
        try:
            figures: dict[str, list[dict]] = {"base": [], "this": []}
            for number in range(1, args.rounds + 1):
                for side, tree in (("base", base_tree), ("this", ROOT)):
                    figures[side].append(table_rows(run_side(tree, script), args.column, args.key))
                    print(f"round {number}: {side} done", file=sys.stderr)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=ROOT, capture_output=True)
    revision = subprocess.run(["git", "rev-parse", "--short", args.base], cwd=ROOT, capture_output=True, text=True)
    print(f"\n{' '.join(script)}: {args.column}, base {revision.stdout.strip()} vs this checkout, "
          f"{args.rounds} rounds alternating\n")  # fmt: skip
    print("| row | round | base | this | this / base |\n|---|---|---|---|---|")
    ratios: dict[tuple[str, ...], list[float]] = {}
    for number, (base, this) in enumerate(zip(figures["base"], figures["this"], strict=True), start=1):
        for key in base:
            if key in this and base[key]:
                ratio = this[key] / base[key]
                ratios.setdefault(key, []).append(ratio)
                print(f"| {' '.join(key)} | {number} | {base[key]:,.1f} | {this[key]:,.1f} | {ratio:.2f}x |")
    for key, values in ratios.items():
        print(f"| {' '.join(key)} | median | | | **{statistics.median(values):.2f}x** |")


if __name__ == "__main__":
    main()
