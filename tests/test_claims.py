"""The run's claims: one owner per text, one record per id, answered again the same way to a
retried task, on hostile ids, in memory that does not grow with the run."""

from __future__ import annotations

import hashlib
import subprocess
import sys

from jobs.dedupe import Claims
from tests.corpus import ROOT


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_the_first_claimant_holds_a_text_or_an_id_and_a_retry_keeps_what_it_held():
    claims = Claims()
    assert claims.claim([sha("a"), sha("b"), sha("a")], ["r1\x000", "r2\x000", "r3\x000"]) == [True, True, False]
    assert claims.claim([sha("a"), sha("b")], ["r1\x000", "r9\x000"]) == [True, False]  # r1's retry; r9 is late

    hostile = ["dup", "dup", "nul\x00id", "lone\udcff", "ünï"]
    origins = ["f.jsonl:1", "f.jsonl:2", "f.jsonl:3", "f.jsonl:4", "f.jsonl:5\udcfe"]
    assert claims.claim_ids(hostile, origins) == ["f.jsonl:1", "f.jsonl:1", "f.jsonl:3", "f.jsonl:4", "f.jsonl:5\udcfe"]
    assert claims.claim_ids(["lone\udcff", "nul\x00id", "nul"], ["f.jsonl:4", "g.jsonl:1", "g.jsonl:2"]) == [
        "f.jsonl:4", "f.jsonl:3", "g.jsonl:2",
    ]  # fmt: skip


def test_a_batch_claims_its_ids_then_only_the_texts_of_the_records_that_hold_their_id():
    claims = Claims()
    assert claims.claim_ids(["x"], ["f.jsonl:1"]) == ["f.jsonl:1"]
    holders, owned = claims.claim_batch(
        ["x", "y", "y"], ["f.jsonl:7", "f.jsonl:8", "f.jsonl:9"],
        [sha("x's"), sha("y's"), sha("y's twin"), sha("unkeyed"), sha("y's")],
        ["x\x000", "y\x000", "y\x000", "record:ab\x000", "y\x001"],
        [0, 1, 2, -1, 1],
    )  # fmt: skip
    assert holders == ["f.jsonl:1", "f.jsonl:8", "f.jsonl:8"]  # x held before; the second y is late
    assert owned == [False, True, False, True, False]  # x's record lost its id; y's chunk 1 repeats chunk 0's text
    # the late records' texts were not claimed: a later record with them owns them
    assert claims.claim([sha("x's"), sha("y's twin")], ["z\x000", "w\x000"]) == [True, True]
    assert claims.claim_batch([], [], [sha("y's")], ["y\x000"], [-1]) == ([], [True])  # a retry keeps its text


CLAIM_MANY = """
import hashlib, sys
from jobs.dedupe import Claims

def resident_mib():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

claims, rows, batch = Claims(), int(sys.argv[1]), 4096
before = resident_mib()
for start in range(0, rows, batch):
    ids = [f"/data/exports/tickets-2026.jsonl:{i}" for i in range(start, min(rows, start + batch))]
    assert claims.claim_ids(ids, ids) == ids
    assert all(claims.claim([hashlib.sha256(i.encode()).hexdigest() for i in ids], ids))
print(resident_mib() - before)
"""


def test_claims_memory_does_not_grow_with_the_run():
    def grown_by(rows: int) -> float:
        command = [sys.executable, "-c", CLAIM_MANY, str(rows)]
        return float(subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300, check=True).stdout)

    grown = [grown_by(50_000), grown_by(400_000)]
    # a dict of 400,000 ids and texts holds over 100 MiB; the page cache is bounded at 32 MiB
    assert grown[1] < 48, grown
    assert grown[1] - grown[0] < 36, grown
