from __future__ import annotations

import subprocess

import pytest

from extract.git_source import GitDatasource, parse_log, read_commits
from extract.sources import open_source
from vectorize.errors import SourceError


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path):
    path = tmp_path / "repo"
    path.mkdir()
    _git(path, "init", "-q")
    _git(path, "config", "user.email", "ann@example.com")
    _git(path, "config", "user.name", "Ann Dev")
    (path / "a.txt").write_text("a")
    _git(path, "add", ".")
    _git(path, "commit", "-qm", "First commit\n\nWith a body.")
    (path / "dir").mkdir()
    (path / "dir" / "b c.txt").write_text("b")
    (path / "e.txt").write_text("e")
    _git(path, "add", ".")
    _git(path, "commit", "-qm", "Second commit")
    _git(path, "commit", "-q", "--allow-empty", "-m", "Empty commit")
    return path


def _shas(repo):
    return subprocess.run(["git", "-C", str(repo), "rev-list", "HEAD"], capture_output=True, text=True).stdout.split()


def test_one_row_per_commit_with_message_paths_and_metadata(repo):
    rows = {r["id"]: r for block in read_commits(repo, _shas(repo)) for r in block.to_pylist()}
    assert set(rows) == set(_shas(repo))
    by_message = {r["text"].split("\n")[0]: r for r in rows.values()}
    assert by_message["First commit"]["text"] == "First commit\n\nWith a body.\n\nFiles changed:\na.txt"
    assert by_message["Second commit"]["text"] == "Second commit\n\nFiles changed:\ndir/b c.txt\ne.txt"
    assert by_message["Empty commit"]["text"] == "Empty commit"
    assert by_message["Second commit"]["author"] == "Ann Dev <ann@example.com>"
    assert by_message["Second commit"]["date"].startswith("20")


def test_bare_repository_reads_the_same(repo, tmp_path, ray_cluster):
    bare = tmp_path / "bare.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(bare)], check=True)
    import ray.data

    got = ray.data.read_datasource(GitDatasource(bare)).take_all()
    assert sorted(r["id"] for r in got) == sorted(_shas(repo))


def test_not_a_repository_is_a_source_error(tmp_path):
    with pytest.raises(SourceError, match="not a git repository"):
        open_source(f"git:{tmp_path}")
    with pytest.raises(SourceError, match="no such directory"):
        open_source(f"git:{tmp_path / 'missing'}")


def test_repository_without_commits_has_no_rows(tmp_path):
    _git(tmp_path, "init", "-q")
    assert GitDatasource(tmp_path).get_read_tasks(4) == []


def test_parse_log_handles_a_message_without_paths():
    out = b"\x1eabc\x1fA <a@b>\x1f2026-01-01T00:00:00+00:00\x1fsubject\n\x1f\x00"
    assert parse_log(out) == [
        {"id": "abc", "text": "subject", "author": "A <a@b>", "date": "2026-01-01T00:00:00+00:00"}
    ]
