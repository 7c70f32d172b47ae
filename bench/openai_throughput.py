"""The remote-provider job against servers that enforce limits: under each limiter, and vs
the fixed-wave approach.

Limiter rows: the job against the test server counting a minute as a token bucket (a minute's
worth, starting full), a log of the last 60 seconds, or fixed 10-second windows holding a sixth
of it, at 6,000 and 200,000 TPM, each with ``--minutes`` of tokens of the shared corpus. Each row
is held against the ideal, the least time the limiter lets those tokens through in
(``ideal_seconds``), counted from the first embedding answer to the last (Ray's and the
actors' start are not the budget's doing).

Waves: each side gets a fresh test server (``tests/openai_server.py``, in its own process: 600 RPM,
200,000 TPM, 150 ms latency, buckets that hold a minute of budget and start full, as OpenAI
describes its limits) and the same texts of the shared corpus:

- job: ``vectorize run`` with ``--provider openai --base-url ... --rpm 600 --tpm 200000``,
  4 actors, one shared budget, file to pgvector (Ray start included);
- waves: the openai SDK as many scripts use it: 3 concurrent requests of 50 texts, wait for
  all three, repeat; the SDK's own retries (2, honouring Retry-After).

Printed for each: seconds, achieved tokens per minute as a fraction of the TPM limit (tokens
the server accepted over the side's wall time), the same tokens as a fraction of all the server
would have accepted in that time (its full starting bucket plus the refill), 429s the server
sent, rows lost (neither stored nor recorded as an error), and the seconds before the first
embedding answer and after the last (for the job: the model check, Ray start and actor start;
then writing the last rows, the index build and the summary).

Batch API row: the whole run through ``--batch-api``, killed as soon as its first batch exists
and run again: rows, tokens, batches made, texts billed, and how many were billed twice (0).

    python bench/openai_throughput.py [--part waves|limiters|batch|all] [--minutes 2] [--texts 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from corpus import CORPUS, ROOT, load_rows

RPM, TPM, LATENCY_MS, API_KEY = 600, 200_000, 150, "sk-bench"
LIMITERS = ("bucket", "sliding", "windows")  # tests/openai_server.py's

LIMITER_TPMS, LIMITER_RPM = (6_000, 200_000), 10_000
BATCH_STEP_S = 2.0  # each of a batch's validating, in_progress and finalizing, on the test server
WAVE_REQUESTS, WAVE_TEXTS = 3, 50


class ServerProcess:
    def __init__(self, rpm: int = RPM, tpm: int = TPM, limiter: str = "bucket") -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        args = [sys.executable, "-m", "tests.openai_server", "--port", str(self.port), "--rpm", str(rpm)]
        args += ["--tpm", str(tpm), "--limiter", limiter, "--latency-ms", str(LATENCY_MS), "--api-key", API_KEY]
        self.tpm = tpm
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL)
        for _ in range(100):
            try:
                self.counters()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("the test server did not start")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def counters(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/_control", timeout=5) as answer:
            return json.load(answer)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def run_job_side(
    source: Path, rows: list[dict], dsn: str, table: str = "bench_openai", server: ServerProcess | None = None
) -> dict:
    from tests.helpers import query
    from vectorize.cli import main as cli_main

    server = server or ServerProcess()
    try:
        args = ["run", str(source), "--table", table, "--dsn", dsn, "--provider", "openai"]
        args += ["--base-url", server.base_url, "--api-key", API_KEY, "--rpm", str(RPM), "--tpm", str(server.tpm)]
        args += ["--actors", "4", "--json"]
        started = time.monotonic()
        with contextlib.redirect_stdout(io.StringIO()):  # the run's own --json summary
            code = cli_main(args)
        ended = time.monotonic()
        counters = server.counters()
    finally:
        server.stop()
    stored = {r[0] for r in query(dsn, f"SELECT id FROM {table}")}
    failed = {r[0] for r in query(dsn, f"SELECT id FROM {table}_errors")}
    lost = sum(1 for r in rows if r["id"] not in stored and r["id"] not in failed)
    first_answer = counters["answered"][1][0]  # the first answer is the one to the model check
    return {
        "exit": code,
        "started": started,
        "ended": ended,
        "first_answer": first_answer,
        "counters": counters,
        "stored": len(stored),
        "lost": lost,
    }


async def waves(base_url: str, texts: list[str]) -> tuple[int, int]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(api_key=API_KEY, base_url=base_url)
    stored = lost = 0

    async def one(batch: list[str]) -> int:
        try:
            response = await client.embeddings.create(model="text-embedding-3-small", input=batch)
            return len(response.data)
        except Exception:
            return 0

    step = WAVE_REQUESTS * WAVE_TEXTS
    for start in range(0, len(texts), step):
        wave = texts[start : start + step]
        batches = [wave[i : i + WAVE_TEXTS] for i in range(0, len(wave), WAVE_TEXTS)]
        done = await asyncio.gather(*(one(b) for b in batches))
        stored += sum(done)
        lost += sum(len(b) - d for b, d in zip(batches, done, strict=True))
    await client.close()
    return stored, lost


def run_wave_side(texts: list[str]) -> dict:
    server = ServerProcess()
    try:
        started = time.monotonic()
        stored, lost = asyncio.run(waves(server.base_url, texts))
        ended = time.monotonic()
        counters = server.counters()
    finally:
        server.stop()
    first_answer = counters["answered"][0][0]
    return {
        "started": started,
        "ended": ended,
        "first_answer": first_answer,
        "counters": counters,
        "stored": stored,
        "lost": lost,
    }


def ideal_seconds(limiter: str, tokens: int, tpm: int) -> float:
    """The least time the limiter lets ``tokens`` through in, starting at its fullest: a bucket
    holding a minute, then its refill; a log of the last minute, a minute's worth at a time;
    10-second windows, a sixth of a minute's worth each."""
    minutes = tokens / tpm
    if limiter == "bucket":
        return max(0.0, minutes - 1.0) * 60
    if limiter == "sliding":
        return math.ceil(minutes - 1.0) * 60 if minutes > 1 else 0.0
    return math.ceil(minutes * 6 - 1.0) * 10 if minutes > 1 / 6 else 0.0


def rows_for_tokens(rows: list[dict], tokens: int) -> list[dict]:
    """The first rows whose texts hold about ``tokens`` tokens (tiktoken, as the job counts)."""
    from vectorize.text import clean_text
    from vectorize.tokens import TiktokenCounter

    counter = TiktokenCounter()
    chosen, total = [], 0
    for row in rows:
        text = clean_text(row["text"])
        if not text:
            continue
        chosen.append(row)
        total += counter.count([text])[0]
        if total >= tokens:
            break
    return chosen


def limiter_rows(rows: list[dict], work: Path, dsn: str, minutes: float, limiters: tuple[str, ...] = LIMITERS) -> None:
    """The job against each limiter of the test server, at a small and a large budget."""
    print(f"\njob (4 actors) against each limiter; {minutes:g} minutes of tokens at each TPM, {LIMITER_RPM} RPM")
    print("| limiter | TPM | rows | tokens | seconds | ideal s | of ideal | requests | 429s | rows lost |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for tpm in LIMITER_TPMS:
        chosen = rows_for_tokens(rows, int(tpm * minutes))
        source = work / f"limiters-{tpm}.jsonl"
        source.write_text("".join(json.dumps(r) + "\n" for r in chosen))
        for limiter in limiters:
            server = ServerProcess(rpm=LIMITER_RPM, tpm=tpm, limiter=limiter)
            result = run_job_side(source, chosen, dsn, f"bench_{limiter}_{tpm}", server)
            counters = result["counters"]
            answered = counters["answered"][1:]  # after the model check
            # from the first embedding answer to the last: the tokens answered after the first
            seconds = answered[-1][0] - answered[0][0]
            tokens = sum(t for _, t in answered[1:])
            ideal = ideal_seconds(limiter, tokens, tpm)
            throttled = counters["statuses"].get("429", 0)
            print(
                f"| {limiter} | {tpm:,} | {len(chosen)} | {tokens:,} | {seconds:.1f} | {ideal:.1f} | "
                f"{ideal / seconds:.2f} | {counters['requests'] - 1} | {throttled} | {result['lost']} |",
                flush=True,
            )


def batch_row(rows: list[dict], work: Path, dsn: str, texts: int) -> None:
    """``--batch-api`` against the test server's Batch API (a batch takes 3 x ``BATCH_STEP_S`` of
    its clock; the organisation queues a third of the run's tokens): the run is killed as soon
    as the server accepted its first batch, then run again, which collects instead of paying again."""
    chosen = rows[:texts]
    source = work / "batch.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in chosen))
    tokens = sum(c for c in _counts(chosen))
    server = ServerProcess(rpm=LIMITER_RPM, tpm=10_000_000)
    post = urllib.request.Request(
        f"http://127.0.0.1:{server.port}/_control", method="POST",
        data=json.dumps({"batch": {"step_s": BATCH_STEP_S, "enqueued_token_limit": tokens // 3}}).encode(),
    )  # fmt: skip
    urllib.request.urlopen(post, timeout=5).close()
    args = [sys.executable, "-m", "vectorize.cli", "run", str(source), "--table", "bench_batch", "--dsn", dsn,
            "--provider", "openai", "--base-url", server.base_url, "--api-key", API_KEY, "--batch-api",
            "--poll-interval", "1", "--json"]  # fmt: skip
    started = time.monotonic()
    first = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while first.poll() is None and _accepted(server.counters()) < 1:
        time.sleep(0.1)
    first.kill()
    first.wait()
    killed_after = time.monotonic() - started
    rerun = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    ended = time.monotonic()
    counters = server.counters()
    server.stop()
    from tests.helpers import query

    stored = {r[0] for r in query(dsn, "SELECT id FROM bench_batch")}
    failed = {r[0] for r in query(dsn, "SELECT id FROM bench_batch_errors")}
    lost = sum(1 for r in chosen if r["id"] not in stored and r["id"] not in failed)
    print(
        f"\n--batch-api, killed {killed_after:.1f} s in (its first accepted batch just made), then run again; "
        f"each batch {3 * BATCH_STEP_S:g} s of the server's clock; the organisation queues {tokens // 3:,} tokens"
    )
    print("| rows | tokens | batches made | of them refused (queue full) | texts billed | billed twice | seconds "
          "| rows stored | rows lost |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {len(chosen)} | {tokens:,} | {counters['batches_created']} | {counters['batches_failed']} | "
          f"{counters['batch_texts_billed']:,} | {counters['batch_texts_billed_twice']} | {ended - started:.1f} | "
          f"{len(stored)} | {lost} |")  # fmt: skip
    if rerun.returncode != 0:
        print(f"the rerun failed: {rerun.stderr.strip()[-500:]}")


def _accepted(counters: dict) -> int:
    return counters["batches_created"] - counters["batches_failed"]


def _counts(rows: list[dict]) -> list[int]:
    from vectorize.text import clean_text
    from vectorize.tokens import TiktokenCounter

    return TiktokenCounter().count([t for t in (clean_text(r["text"]) for r in rows) if t])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=5000)
    parser.add_argument("--part", choices=("waves", "limiters", "batch", "all"), default="all")
    parser.add_argument("--batch-texts", type=int, default=5000, help="texts of the Batch API row")
    parser.add_argument("--limiter", action="append", choices=LIMITERS, help="only these limiters' rows")
    parser.add_argument("--minutes", type=float, default=2.5, help="minutes of tokens per limiter row")
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from vectorize.embedded_pg import start_embedded_postgres
    from vectorize.text import clean_text

    rows = load_rows(max(args.texts, 20_000) if args.part != "waves" else args.texts)
    work = Path(tempfile.mkdtemp(prefix="vectorize-bench-openai-"))
    dsn = start_embedded_postgres(work / "pg")
    if args.part in ("limiters", "all"):
        limiter_rows(rows, work, dsn, args.minutes, tuple(args.limiter or LIMITERS))
    if args.part in ("batch", "all"):
        batch_row(rows, work, dsn, args.batch_texts)
    if args.part in ("limiters", "batch"):
        return
    rows = rows[: args.texts]
    source = work / "commits.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    texts = [t for t in (clean_text(r["text"]) for r in rows) if t]

    results = {"job (4 actors, shared budget)": run_job_side(source, rows, dsn), "fixed waves (3 x 50)": None}
    results["fixed waves (3 x 50)"] = run_wave_side(texts)
    print(f"\n{len(rows)} texts of {CORPUS.name}; server: {RPM} RPM, {TPM:,} TPM, {LATENCY_MS} ms latency")
    print(
        "| approach | seconds | tokens/min | of TPM limit | of what the server allowed | 429s | rows stored "
        "| rows lost | s before first embedding answer | s after the last |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    fractions = {}
    for name, result in results.items():
        counters = result["counters"]
        seconds = result["ended"] - result["started"]
        per_minute = counters["tokens_served"] / (seconds / 60)
        fractions[name] = per_minute / TPM
        allowed = TPM + TPM * seconds / 60  # a full minute's bucket at the start, then the refill
        print(
            f"| {name} | {seconds:.1f} | {per_minute:,.0f} | {fractions[name]:.2f} | "
            f"{counters['tokens_served'] / allowed:.2f} | {counters['statuses'].get('429', 0)} | "
            f"{result['stored']} | {result['lost']} | {result['first_answer'] - result['started']:.1f} | "
            f"{result['ended'] - counters['answered'][-1][0]:.1f} |"
        )
    job, wave = fractions.values()
    print(f"job / waves, tokens per minute: {job / wave:.2f}x")


if __name__ == "__main__":
    main()
