"""GitHub issues and pull requests as the REST API returns them, flattened for a template.

Records come from the issues or pulls endpoints (lists, search results or one per line).
Comments and review comments are read where the export attached them as lists of the
comments endpoints' objects (the API's own issue object only counts them); the most recent
ones are kept, oldest first. The ``id`` is ``owner/repo#number``.
"""

from __future__ import annotations

import re
from typing import Any

from extract.records import RecordError

MAX_COMMENTS = 5
GITHUB_FIELDS = (
    "id", "repository", "number", "title", "body", "labels", "comments", "review_comments",
    "state", "author", "kind", "created", "updated",
)  # fmt: skip
GITHUB_METADATA = ("repository", "number", "state", "author", "kind", "created", "updated")
GITHUB_TEMPLATE = (
    "{title}\n\n{body}\n\nLabels: {labels}\n\nComments:\n{comments}\n\nReview comments:\n{review_comments}"
)
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.S)
_REPO_URL = re.compile(r"github\.com/(?:repos/)?([^/]+/[^/]+)")


def _login(user: Any) -> str:
    return user.get("login", "") if isinstance(user, dict) and isinstance(user.get("login"), str) else ""


def _markdown(value: Any) -> str:
    return _HTML_COMMENT.sub("", value) if isinstance(value, str) else ""


def _repository(record: dict) -> str:
    if isinstance(record.get("repository"), str):
        return record["repository"]
    base = record.get("base")
    if isinstance(base, dict) and isinstance(base.get("repo"), dict):
        name = base["repo"].get("full_name")
        if isinstance(name, str):
            return name
    for key in ("repository_url", "html_url", "url"):
        found = _REPO_URL.search(str(record.get(key) or ""))
        if found:
            return found.group(1)
    return ""


def _comment_text(items: Any, with_path: bool) -> str:
    if not isinstance(items, list):  # the API's own count of comments
        return ""
    ordered = sorted((c for c in items if isinstance(c, dict)), key=lambda c: str(c.get("created_at", "")))
    parts = []
    for comment in ordered[-MAX_COMMENTS:]:
        body = _markdown(comment.get("body")).strip()
        if not body:
            continue
        where = f" on {comment['path']}" if with_path and isinstance(comment.get("path"), str) else ""
        author = _login(comment.get("user"))
        parts.append(f"{author}{where}: {body}" if author or where else body)
    return "\n\n".join(parts)


def flatten_github_item(record: Any) -> dict[str, str]:
    if (
        not isinstance(record, dict)
        or not isinstance(record.get("number"), int)
        or not isinstance(record.get("title"), str)
    ):
        raise RecordError(
            "not_a_github_item", "not a GitHub issue or pull request: needs a number 'number' and a string 'title'"
        )
    repository = _repository(record)
    if not repository:
        raise RecordError("not_a_github_item", "no repository: needs 'repository_url', 'html_url' or 'base.repo'")
    is_pull = "pull_request" in record or "head" in record or "merged_at" in record
    labels = [lbl.get("name") if isinstance(lbl, dict) else lbl for lbl in record.get("labels") or []]
    return {
        "id": f"{repository}#{record['number']}",
        "repository": repository,
        "number": str(record["number"]),
        "title": record["title"],
        "body": _markdown(record.get("body")),
        "labels": ", ".join(str(label) for label in labels if label),
        "comments": _comment_text(record.get("comments"), with_path=False),
        "review_comments": _comment_text(record.get("review_comments"), with_path=True),
        "state": str(record.get("state") or ""),
        "author": _login(record.get("user")),
        "kind": "pull_request" if is_pull else "issue",
        "created": str(record.get("created_at") or ""),
        "updated": str(record.get("updated_at") or ""),
    }
