"""Jira and GitHub exports: rich text to plain text, flattening, and whole runs."""

from __future__ import annotations

import json

import pytest

from extract.adf import adf_to_text
from extract.github import flatten_github_item
from extract.jira import flatten_jira_issue
from extract.records import RecordError
from extract.wiki_markup import wiki_to_text
from tests.helpers import errors, query, run
from tests.tracker_exports import adf, github_items, jira_issues, write_json
from vectorize.errors import SourceError


def test_adf_keeps_visible_text_lists_and_code():
    issue = jira_issues()[0]
    text = adf_to_text(issue["fields"]["description"])
    assert text.splitlines() == [
        "After a reset the @Dana login page loops.",
        "",
        "- Reset the password",
        "- Log in",
        "  - with the new one",
        "",
        "302 /login",
    ]


@pytest.mark.parametrize(
    ("document", "fault"),
    [
        ({"type": "doc", "content": "not a list"}, "'content' is not a list"),
        (adf({"content": []}), "not an object with a 'type'"),
        (adf({"type": "paragraph", "content": [{"type": "text", "text": 5}]}), "no string 'text'"),
        ({"type": "paragraph"}, "not an object of type 'doc'"),
    ],
)
def test_broken_adf_is_a_record_error_naming_the_fault(document, fault):
    with pytest.raises(RecordError) as caught:
        adf_to_text(document)
    assert caught.value.reason == "broken_adf"
    assert fault in caught.value.message


def test_wiki_markup_becomes_plain_text():
    markup = (
        "h1. Title\n*bold* and _it_ and {{code()}} and -gone- but well-known\n"
        "* one\n** two\n||a||b||\n|1|2|\n[the docs|https://x.example] !shot.png! {color:red}red{color}\n"
        "bq. quoted\n{noformat}\nraw *text*\n{noformat}"
    )
    assert wiki_to_text(markup).splitlines() == [
        "Title",
        "bold and it and code() and gone but well-known",
        "- one",
        "- two",
        "a | b",
        "1 | 2",
        "the docs  red",
        "quoted",
        "",
        "raw text",
    ]


def test_jira_issue_flattens_with_the_five_latest_comments_oldest_first():
    flat = {flatten_jira_issue(i)["key"]: flatten_jira_issue(i) for i in jira_issues()}
    assert flat["PLAT-1"]["labels"] == "auth, regression" and flat["PLAT-1"]["components"] == "web"
    assert flat["PLAT-1"]["comments"] == "Lee Chen: Seen on staging too."
    assert flat["PLAT-2"]["description"] == "Steps\n- Open Reports\n- Click Export\n\nexport(header=false);"
    assert flat["PLAT-2"]["comments"] == "Dana Smith: Fixed in build 42."
    assert (flat["PLAT-2"]["status"], flat["PLAT-2"]["type"], flat["PLAT-2"]["project"]) == (
        "In Progress",
        "Story",
        "PLAT",
    )
    assert flat["PLAT-3"]["comments"].split("\n\n") == [f"User {n}: comment number {n}" for n in (3, 4, 5, 6, 7)]
    assert flat["PLAT-3"]["description"] == ""


def test_github_issue_and_pull_request_flatten():
    issue, pull = (flatten_github_item(item) for item in github_items())
    assert issue["id"] == "acme/widgets#7" and issue["kind"] == "issue" and issue["labels"] == "bug"
    assert issue["body"].strip() == "The CLI crashes with `KeyError` on an empty file."
    assert issue["comments"] == "maria: Reproduced on 2.1."
    assert pull["id"] == "acme/widgets#8" and pull["kind"] == "pull_request" and pull["author"] == "maria"
    assert pull["comments"] == ""
    assert pull["review_comments"] == "octo on cli/config.py: Return {} here instead."


@pytest.mark.usefixtures("ray_cluster")
def test_jira_search_page_runs_with_the_default_template_and_bad_records_become_errors(
    tmp_path, tiny_model, pg_dsn, table_name
):
    issues = jira_issues()
    broken = jira_issues()[0]
    broken["key"] = "PLAT-9"
    broken["fields"]["description"] = adf({"type": "paragraph", "content": [{"type": "text"}]})
    page = {"startAt": 0, "maxResults": 50, "total": 5, "issues": [*issues, broken, {"id": "1", "title": "not jira"}]}
    summary = run(f"jira:{write_json(tmp_path / 'search.json', page)}", table_name, tiny_model, pg_dsn)
    assert (summary.rows_read, summary.embedded, summary.failed) == (5, 3, 2)
    got = {k: (t, m) for k, t, m in query(pg_dsn, "SELECT id, text, metadata FROM {t}", table=table_name)}
    text, metadata = got["PLAT-1"]
    assert text.startswith("Login fails after password reset\n\nAfter a reset the @Dana login page loops.")
    assert "Labels: auth, regression\nComponents: web" in text
    assert text.endswith("Comments:\nLee Chen: Seen on staging too.")
    assert metadata == {
        "key": "PLAT-1", "project": "PLAT", "status": "Open", "type": "Bug", "priority": "High",
        "assignee": "Dana Smith", "created": "2024-03-01T10:00:00.000+0000", "updated": "2024-03-05T16:30:00.000+0000",
    }  # fmt: skip
    assert "Labels" not in got["PLAT-3"][0] and "Components" not in got["PLAT-3"][0]
    failed = errors(pg_dsn, table_name)
    assert failed["PLAT-9"][0] == "broken_adf"
    assert [reason for key, (reason, _) in failed.items() if key != "PLAT-9"] == ["not_a_jira_issue"]


@pytest.mark.usefixtures("ray_cluster")
def test_github_lines_run_and_text_template_overrides(tmp_path, tiny_model, pg_dsn, table_name):
    path = tmp_path / "items.jsonl"
    path.write_text("\n".join(json.dumps(item) for item in github_items()) + "\n[1, 2]\n")
    summary = run(f"github:{path}", table_name, tiny_model, pg_dsn, text="{title} ({state})")
    assert (summary.embedded, summary.failed) == (2, 1)
    got = dict(query(pg_dsn, "SELECT id, text FROM {t}", table=table_name))
    assert got == {
        "acme/widgets#7": "Crash when the config file is empty (open)",
        "acme/widgets#8": "Handle an empty config file (closed)",
    }


def test_unknown_template_field_names_the_fields_that_exist(tmp_path, tiny_model, pg_dsn, table_name):
    path = write_json(tmp_path / "i.json", github_items())
    with pytest.raises(
        SourceError, match=r"'summary' is not in the source .*its fields: id, repository, number, title"
    ):
        run(f"github:{path}", table_name, tiny_model, pg_dsn, text="{summary}")
    with pytest.raises(SourceError, match="an export is JSON"):
        run(f"jira:{write_json(tmp_path / 'x.csv', [])}", table_name, tiny_model, pg_dsn)


def test_tracker_threads_are_chunked_by_default_and_record_files_truncated(tmp_path):
    from extract.sources import open_source

    export = write_json(tmp_path / "items.json", github_items())
    assert open_source(f"github:{export}").default_long_text == "chunk"
    assert open_source(f"jira:{export}").default_long_text == "chunk"
    assert open_source(str(export)).default_long_text == "truncate"
