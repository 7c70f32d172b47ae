"""Jira and GitHub exports in the REST APIs' own shapes, written by the suite."""

from __future__ import annotations

import json
from pathlib import Path


def adf(*blocks: dict) -> dict:
    return {"type": "doc", "version": 1, "content": list(blocks)}


def paragraph(*parts: str | dict) -> dict:
    return {"type": "paragraph", "content": [{"type": "text", "text": p} if isinstance(p, str) else p for p in parts]}


def jira_comment(author: str, created: str, body: str | dict) -> dict:
    return {"author": {"displayName": author, "accountId": author.lower()}, "created": created, "body": body}


def jira_issue(key: str, summary: str, description: str | dict | None, comments: list[dict], **extra) -> dict:
    fields = {
        "summary": summary,
        "description": description,
        "comment": {"comments": comments, "maxResults": len(comments), "total": len(comments), "startAt": 0},
        "labels": extra.get("labels", []),
        "components": [{"id": "10", "name": name} for name in extra.get("components", [])],
        "project": {"key": key.split("-")[0], "name": "Platform"},
        "status": {"name": extra.get("status", "Open"), "statusCategory": {"key": "new"}},
        "issuetype": {"name": extra.get("type", "Bug"), "subtask": False},
        "priority": {"name": "High"},
        "assignee": {"displayName": "Dana Smith", "emailAddress": "dana@example.com"},
        "reporter": {"displayName": "Lee Chen"},
        "created": "2024-03-01T10:00:00.000+0000",
        "updated": "2024-03-05T16:30:00.000+0000",
    }
    return {
        "id": str(10000 + int(key.split("-")[1])),
        "key": key,
        "self": f"https://jira.example/rest/api/3/issue/{key}",
        "fields": fields,
    }


def jira_issues() -> list[dict]:
    """Three issues: ADF (nested lists, a mention, a code block), wiki markup, and one with
    seven comments of which the five most recent count."""
    v3 = jira_issue(
        "PLAT-1",
        "Login fails after password reset",
        adf(
            paragraph("After a reset the ", {"type": "mention", "attrs": {"text": "@Dana"}}, " login page loops."),
            {
                "type": "bulletList",
                "content": [
                    {"type": "listItem", "content": [paragraph("Reset the password")]},
                    {
                        "type": "listItem",
                        "content": [
                            paragraph("Log in "),
                            {
                                "type": "bulletList",
                                "content": [{"type": "listItem", "content": [paragraph("with the new one")]}],
                            },
                        ],
                    },
                ],
            },
            {"type": "codeBlock", "attrs": {"language": "text"}, "content": [{"type": "text", "text": "302 /login"}]},
        ),
        [jira_comment("Lee Chen", "2024-03-02T09:00:00.000+0000", adf(paragraph("Seen on staging too.")))],
        labels=["auth", "regression"],
        components=["web"],
    )
    v2 = jira_issue(
        "PLAT-2",
        "Export to CSV drops the header",
        "h2. Steps\n# Open *Reports*\n# Click [Export|https://jira.example/export]\n{code:java}\nexport(header=false);\n{code}",
        [jira_comment("Dana Smith", "2024-03-03T11:00:00.000+0000", "Fixed in _build 42_.")],
        status="In Progress",
        type="Story",
    )
    chatty = jira_issue(
        "PLAT-3",
        "Slow search",
        None,
        [
            jira_comment(f"User {n}", f"2024-03-0{n}T08:00:00.000+0000", f"comment number {n}")
            for n in (7, 1, 2, 3, 4, 5, 6)
        ],
    )
    return [v3, v2, chatty]


def github_items() -> list[dict]:
    """An issue with comments and a pull request with review comments, as the issues and
    pulls endpoints return them, with the comments endpoints' lists attached."""
    user = {"login": "octo", "id": 1, "type": "User"}
    issue = {
        "url": "https://api.github.com/repos/acme/widgets/issues/7",
        "repository_url": "https://api.github.com/repos/acme/widgets",
        "html_url": "https://github.com/acme/widgets/issues/7",
        "number": 7,
        "title": "Crash when the config file is empty",
        "body": "<!-- template: describe the bug -->\nThe CLI crashes with `KeyError` on an empty file.",
        "state": "open",
        "user": user,
        "labels": [{"id": 1, "name": "bug", "color": "d73a4a"}],
        "created_at": "2024-04-01T12:00:00Z",
        "updated_at": "2024-04-02T12:00:00Z",
        "comments": [
            {"user": {"login": "maria"}, "body": "Reproduced on 2.1.", "created_at": "2024-04-01T13:00:00Z"},
        ],
    }
    pull = {
        "url": "https://api.github.com/repos/acme/widgets/pulls/8",
        "html_url": "https://github.com/acme/widgets/pull/8",
        "number": 8,
        "title": "Handle an empty config file",
        "body": "Fixes #7.",
        "state": "closed",
        "merged_at": "2024-04-03T09:00:00Z",
        "user": {"login": "maria"},
        "labels": [],
        "head": {"ref": "fix-empty", "repo": {"full_name": "maria/widgets"}},
        "base": {"ref": "main", "repo": {"full_name": "acme/widgets"}},
        "created_at": "2024-04-02T15:00:00Z",
        "updated_at": "2024-04-03T09:00:00Z",
        "comments": 0,
        "review_comments": [
            {
                "user": {"login": "octo"},
                "path": "cli/config.py",
                "body": "Return {} here instead.",
                "created_at": "2024-04-02T16:00:00Z",
            },
        ],
    }
    return [issue, pull]


def write_json(path: Path, payload: object) -> Path:
    path.write_text(json.dumps(payload, indent=2))
    return path
