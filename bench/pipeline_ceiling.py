"""The pipeline's own ceiling: a provider that does no model work (``null_provider.py``) on rows
generated from the shared corpus, so the figures are the pipeline's: reading, preparing, the
skip-known lookups, the text claims and the sink's COPY.

For each size: a first run into an empty collection, then an unchanged rerun; rows/s of each,
and the peak resident memory of the driver and of each kind of Ray process. The runs ask for no
vector index (``--index none``): building one is the search benchmark's to measure.
``--text-search none``: collections without the keyword index, whose words Postgres otherwise
parses and indexes on each write.

    python bench/pipeline_ceiling.py [--rows 100000 1000000] [--text-search none]
    python bench/pipeline_ceiling.py --rows 200000 --compare-text-search 2
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import sys
import threading
import time
from pathlib import Path

import null_provider
from corpus import CORPUS, embedded_server, load_rows, write_source


class MemorySampler:
    """Peak memory by role, twice a second: the driver, and each Ray process by its title
    (``ray::RunActor``, ``ray::MapWorker(MapBatches(EmbedBatches))``, ...); a task worker counts
    under every title it was seen with. ``peaks`` holds the private memory (resident less
    shared: the object store's pages a worker has mapped are the node's, counted once, not
    the process's), ``resident_peaks`` the resident set as ``ps`` shows it."""

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self.peaks: dict[str, int] = {}
        self.resident_peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        me = self._psutil.Process()
        for proc in [me, *me.children(recursive=True)]:
            try:
                words = proc.cmdline() or [proc.name()]
                memory = proc.memory_info()
            except self._psutil.Error:
                continue
            title = words[0].split(" ")[0]
            ray_role = re.sub(r"\(\d+\)$", "", re.sub(r"\.\w+$", "", title)) if title.startswith("ray::") else None
            role = "driver" if proc.pid == me.pid else ray_role
            if role is None or role == "ray::IDLE":
                continue
            self.peaks[role] = max(self.peaks.get(role, 0), memory.rss - memory.shared)
            self.resident_peaks[role] = max(self.resident_peaks.get(role, 0), memory.rss)

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            self._sample()

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def one_run(source, dsn: str, table: str, text_search: str | None) -> tuple[float, dict, dict, dict]:
    from jobs.launch import run_job
    from vectorize.settings import RunSettings

    settings = RunSettings.of(
        source=str(source), table=table, dsn=dsn, provider="null", model="null", index="none", text_search=text_search
    )
    with MemorySampler() as memory:
        started = time.perf_counter()
        summary = run_job(settings)
        seconds = time.perf_counter() - started
    return seconds, summary.to_dict(), memory.peaks, memory.resident_peaks


def generated_workspace(rows: int):
    """The source file written by a child process, so that the driver's peak memory is the
    run's, not that of the rows this script made."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
        source = child.submit(_write_source, rows).result()
    return source, embedded_server(source.parent)


def _write_source(rows: int) -> Path:
    return write_source(load_rows(rows), "vectorize-ceiling-")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    keyword = parser.add_mutually_exclusive_group()
    keyword.add_argument("--text-search", help="the collection's keyword index (default: a run's default, simple; "
                        "none: no keyword index)")  # fmt: skip
    keyword.add_argument("--compare-text-search", type=int, metavar="ROUNDS", help="instead: collections with "
                        "and without the keyword index side by side, alternating, this many rounds a size")  # fmt: skip
    args = parser.parse_args()
    from vectorize.ray_runtime import ensure_ray

    null_provider.register()
    ensure_ray()
    if args.compare_text_search:
        compare_keyword_index(args.rows, args.compare_text_search)
        return
    results = []
    for n in args.rows:
        source, server = generated_workspace(n)
        first = one_run(source, server.get_uri(), "ceiling", args.text_search)
        print(f"{n} rows: first run {first[0]:.1f}s", file=sys.stderr)
        with source.open("a") as fh:  # the same rows, another digest: every row is read again
            fh.write("\n")
        rerun = one_run(source, server.get_uri(), "ceiling", args.text_search)
        print(f"{n} rows: rerun {rerun[0]:.1f}s", file=sys.stderr)
        results.append((n, first, rerun))
        server.cleanup()

    keyword = args.text_search or "simple"
    print(f"\nnull provider ({null_provider.DIMENSIONS} dimensions), rows from {CORPUS.name}, {os.cpu_count()} cores, "
          f"--text-search {keyword}\n")  # fmt: skip
    print("| rows | run | seconds | rows/s | embedded | unchanged | failed |")
    print("|---|---|---|---|---|---|---|")
    for n, first, rerun in results:
        for name, (seconds, summary, *_) in (("first", first), ("rerun", rerun)):
            print(
                f"| {n:,} | {name} | {seconds:.1f} | {n / seconds:,.0f} | {summary['embedded']:,} "
                f"| {summary['unchanged']:,} | {summary['failed']:,} |"
            )
    for title, kind in (("private memory (resident less shared)", 2), ("resident memory", 3)):
        print_memory(results, title, kind)
    if len(results) > 1:
        (n0, f0, r0), (n1, f1, r1) = results[0], results[-1]
        for name, a, b in (("first", f0, f1), ("rerun", r0, r1)):
            growth = max(b[2][k] / a[2][k] for k in b[2] if a[2].get(k))
            print(f"\n{name}: rows/s {n1 / b[0]:,.0f} at {n1:,} vs {n0 / a[0]:,.0f} at {n0:,}; "
                  f"largest peak private-memory growth of one process {growth:.2f}x")  # fmt: skip


def first_and_rerun(n: int, text_search: str | None) -> tuple[float, float]:
    source, server = generated_workspace(n)
    first = one_run(source, server.get_uri(), "ceiling", text_search)[0]
    with source.open("a") as fh:  # the same rows, another digest: every row is read again
        fh.write("\n")
    rerun = one_run(source, server.get_uri(), "ceiling", text_search)[0]
    server.cleanup()
    print(f"{n} rows, --text-search {text_search}: first {first:.1f}s, rerun {rerun:.1f}s", file=sys.stderr)
    return n / first, n / rerun


def compare_keyword_index(sizes: list[int], rounds: int) -> None:
    """rows/s with the keyword index (``simple``) and without (``none``), in alternating rounds."""
    import statistics

    lines, ratios = [], {}
    for n in sizes:
        for round_ in range(1, rounds + 1):
            order = ("simple", "none") if round_ % 2 else ("none", "simple")
            measured = {text_search: first_and_rerun(n, text_search) for text_search in order}
            for i, run in enumerate(("first", "rerun")):
                with_index, without = measured["simple"][i], measured["none"][i]
                ratio = without / with_index
                ratios.setdefault((n, run), []).append(ratio)
                lines.append(f"| {n:,} {run} | {round_} | {with_index:,.0f} | {without:,.0f} | {ratio:.2f}x |")
    print(f"\nnull provider, rows/s, rows from {CORPUS.name}, {os.cpu_count()} cores\n")
    print("| rows | round | --text-search simple | --text-search none | none / simple |")
    print("|---|---|---|---|---|")
    print("\n".join(lines))
    for (n, run), values in ratios.items():
        print(f"| {n:,} {run} | median | | | **{statistics.median(values):.2f}x** |")


def print_memory(results: list, title: str, kind: int) -> None:
    roles = sorted({role for _, f, r in results for role in (*f[kind], *r[kind])})
    print(f"\npeak {title}, MiB (first run / rerun):\n")
    print("| process | " + " | ".join(f"{n:,} rows" for n, _, _ in results) + " |")
    print("|---|" + "---|" * len(results))
    for role in roles:
        cells = [f"{f[kind].get(role, 0) / 2**20:.0f} / {r[kind].get(role, 0) / 2**20:.0f}" for _, f, r in results]
        print(f"| {role} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
