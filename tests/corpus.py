"""Texts for tests: the shared commit corpus where it is beside the checkout, else this
repository's own git history, else a fixture written here."""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED_CORPUS = ROOT.parent / "shared" / "data" / "git-commits.jsonl.gz"


def _from_git(limit: int) -> list[dict]:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "log", f"-{limit}", "--format=%H%x1f%an%x1f%aI%x1f%B%x1e"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    rows = []
    for record in out.split("\x1e"):
        if record.strip():
            sha, author, date, body = record.strip("\n").split("\x1f", 3)
            rows.append({"id": sha, "author": author, "date": date, "text": body.strip()})
    return rows


def _fixture(limit: int) -> list[dict]:
    topics = ["index build", "query planner", "write path", "retry logic", "tokenizer", "cache"]
    verbs = ["Fix race in", "Speed up", "Refactor", "Document", "Add tests for", "Remove dead code in"]
    return [
        {
            "id": f"fixture-{i}",
            "author": "Test Author",
            "date": "2026-01-01T00:00:00+00:00",
            "text": f"{verbs[i % len(verbs)]} the {topics[(i // len(verbs)) % len(topics)]} (change {i})",
        }
        for i in range(limit)
    ]


def commit_rows(limit: int) -> list[dict]:
    """``limit`` commit-like records with id, author, date and text."""
    if SHARED_CORPUS.exists():
        rows = []
        with gzip.open(SHARED_CORPUS, "rt") as fh:
            for line in fh:
                rows.append(json.loads(line))
                if len(rows) >= limit:
                    return rows
    rows = _from_git(limit)
    return rows if len(rows) >= limit else rows + _fixture(limit - len(rows))


def write_jsonl(path: Path, rows: list[dict], extra_lines: list[str] = ()) -> Path:
    with path.open("w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
        for line in extra_lines:
            fh.write(line + "\n")
    return path
