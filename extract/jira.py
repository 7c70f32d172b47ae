"""Jira issues as the REST API returns them, flattened into the fields a template can use.

Accepts API v2 (descriptions and comments in wiki markup) and v3 (Atlassian Document Format).
The ``id`` is the issue key; comments are the most recent ones, oldest first.
"""

from __future__ import annotations

from typing import Any

from extract.adf import adf_to_text
from extract.records import RecordError
from extract.wiki_markup import wiki_to_text

MAX_COMMENTS = 5
JIRA_FIELDS = (
    "id", "key", "summary", "description", "comments", "labels", "components",
    "project", "status", "type", "priority", "assignee", "reporter", "created", "updated",
)  # fmt: skip
JIRA_METADATA = ("key", "project", "status", "type", "priority", "assignee", "created", "updated")
JIRA_TEMPLATE = "{summary}\n\n{description}\n\nLabels: {labels}\nComponents: {components}\n\nComments:\n{comments}"


def rich_text(value: Any) -> str:
    """A description or comment body: wiki markup (a string), ADF (an object), or nothing."""
    if value is None:
        return ""
    if isinstance(value, str):
        return wiki_to_text(value)
    return adf_to_text(value)


def _name(value: Any, *keys: str) -> str:
    if isinstance(value, dict):
        for key in keys:
            if isinstance(value.get(key), str):
                return value[key]
    return value if isinstance(value, str) else ""


def _comments(fields: dict) -> str:
    page = fields.get("comment")
    items = page.get("comments", []) if isinstance(page, dict) else page if isinstance(page, list) else []
    items = [c for c in items if isinstance(c, dict)]
    items.sort(key=lambda c: str(c.get("created", "")))
    parts = []
    for comment in items[-MAX_COMMENTS:]:
        body = rich_text(comment.get("body"))
        if body:
            author = _name(comment.get("author"), "displayName", "name")
            parts.append(f"{author}: {body}" if author else body)
    return "\n\n".join(parts)


def flatten_jira_issue(record: Any) -> dict[str, str]:
    if (
        not isinstance(record, dict)
        or not isinstance(record.get("key"), str)
        or not isinstance(record.get("fields"), dict)
    ):
        raise RecordError("not_a_jira_issue", "not a Jira issue: needs a string 'key' and a 'fields' object")
    fields = record["fields"]
    try:
        return _flat(record["key"], fields)
    except RecordError as exc:
        exc.key = record["key"]
        raise


def _flat(key: str, fields: dict) -> dict[str, str]:
    return {
        "id": key,
        "key": key,
        "summary": _name(fields.get("summary")),
        "description": rich_text(fields.get("description")),
        "comments": _comments(fields),
        "labels": ", ".join(str(label) for label in fields.get("labels") or []),
        "components": ", ".join(_name(c, "name") for c in fields.get("components") or []),
        "project": _name(fields.get("project"), "key", "name"),
        "status": _name(fields.get("status"), "name"),
        "type": _name(fields.get("issuetype"), "name"),
        "priority": _name(fields.get("priority"), "name"),
        "assignee": _name(fields.get("assignee"), "displayName", "name"),
        "reporter": _name(fields.get("reporter"), "displayName", "name"),
        "created": _name(fields.get("created")),
        "updated": _name(fields.get("updated")),
    }
