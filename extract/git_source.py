"""A git repository as a Ray Data source: one row per commit reachable from HEAD.

id = commit hash, text = message plus the paths the commit touched, author and date as
metadata. Works on bare and non-bare repositories; commits are split across read tasks.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
from ray.data.block import Block, BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from vectorize.errors import SourceError

logger = logging.getLogger(__name__)

GIT_FIELDS = ("id", "text", "author", "date")
MAX_PATHS_LISTED = 200
_FORMAT = "%x1e%H%x1f%an <%ae>%x1f%aI%x1f%B%x1f"
_SCHEMA = pa.schema([(name, pa.string()) for name in GIT_FIELDS])


def _git(repo: Path, *args: str, stdin: bytes | None = None) -> bytes:
    result = subprocess.run(["git", "-C", str(repo), *args], input=stdin, capture_output=True, check=False)
    if result.returncode != 0:
        raise subprocess.CalledProcessError(result.returncode, args, result.stdout, result.stderr)
    return result.stdout


def check_repository(repo: Path) -> Path:
    if not repo.exists():
        raise SourceError(f"git:{repo}: no such directory")
    try:
        _git(repo, "rev-parse", "--git-dir")
    except FileNotFoundError:
        raise SourceError("git is not installed, so git: sources cannot be read") from None
    except subprocess.CalledProcessError:
        raise SourceError(f"git:{repo} is not a git repository") from None
    return repo.resolve()


def list_commits(repo: Path) -> list[str]:
    try:
        return _git(repo, "rev-list", "HEAD").decode().split()
    except subprocess.CalledProcessError:
        return []  # a repository without commits yet


def commit_text(message: str, paths: list[str]) -> str:
    text = message.strip()
    if paths:
        listed = paths[:MAX_PATHS_LISTED]
        more = len(paths) - len(listed)
        text += "\n\nFiles changed:\n" + "\n".join(listed) + (f"\n… and {more} more" if more else "")
    return text


def parse_log(output: bytes) -> list[dict[str, str]]:
    """Parse ``git log -z --name-only --format=_FORMAT`` output into rows."""
    commits = []
    for record in output.decode("utf-8", errors="replace").split("\x1e"):
        if not record.strip("\0\n"):
            continue
        sha, author, date, message, rest = record.split("\x1f", 4)
        paths = [p.strip("\n") for p in rest.split("\0") if p.strip("\n")]
        commits.append({"id": sha, "text": commit_text(message, paths), "author": author, "date": date})
    return commits


def read_commits(repo: Path, shas: list[str]) -> Iterable[Block]:
    output = _git(
        repo,
        "log",
        "--no-walk=unsorted",
        "--stdin",
        "-z",
        "--name-only",
        f"--format={_FORMAT}",
        stdin="\n".join(shas).encode(),
    )
    commits = parse_log(output)
    yield pa.Table.from_pylist(commits, schema=_SCHEMA)


class GitDatasource(Datasource):
    def __init__(self, repo: str | Path) -> None:
        self.repo = check_repository(Path(repo).expanduser())
        self.shas = list_commits(self.repo)

    def get_name(self) -> str:
        return "Git"

    def estimate_inmemory_data_size(self) -> int:
        return len(self.shas) * 600

    def get_read_tasks(
        self, parallelism: int, per_task_row_limit: int | None = None, data_context: object | None = None
    ) -> list[ReadTask]:
        if not self.shas:
            return []
        parts = max(1, min(parallelism, len(self.shas) // 500 + 1))
        size = -(-len(self.shas) // parts)
        tasks = []
        for start in range(0, len(self.shas), size):
            shas = self.shas[start : start + size]
            meta = BlockMetadata(num_rows=len(shas), size_bytes=len(shas) * 600, input_files=None, exec_stats=None)
            tasks.append(
                ReadTask(
                    lambda repo=self.repo, shas=shas: read_commits(repo, shas),
                    meta,
                    schema=_SCHEMA,
                    per_task_row_limit=per_task_row_limit,
                )
            )
        return tasks
