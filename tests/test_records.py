from __future__ import annotations

import json

from extract.records import RecordSpec, prepare_json_line, prepare_record
from vectorize import rows
from vectorize.text import TextTemplate, content_hash

SPEC = RecordSpec("id", TextTemplate.parse("{title}\\n\\n{body}"))


def test_good_record_gets_text_hash_and_metadata():
    row = prepare_record({"id": 7, "title": "Crash", "body": "on  start", "prio": "high"}, SPEC)
    assert row["status"] == rows.EMBED
    assert row["id"] == "7"
    assert row["text"] == "Crash\n\non start"
    assert row["text_sha256"] == content_hash("Crash\n\non start")
    assert json.loads(row["metadata"]) == {"prio": "high"}


def test_each_bad_record_is_an_error_row_with_its_reason():
    cases = {
        "missing_id": {"title": "a", "body": "b"},
        "bad_id": {"id": {"x": 1}, "title": "a", "body": "b"},
        "missing_text": {"id": 1, "title": "a"},
        "not_a_string": {"id": 1, "title": "a", "body": 5},
        "empty_text": {"id": 1, "title": " \x00 ", "body": "\n\t"},
    }
    for reason, record in cases.items():
        row = prepare_record(record, SPEC, position="f.jsonl:3")
        assert (row["status"], row["reason"]) == (rows.ERROR, reason), reason
        assert json.loads(row["raw"]) == record


def test_record_without_id_is_keyed_by_its_position():
    row = prepare_record({"title": "a", "body": "b"}, SPEC, position="data.jsonl:12")
    assert row["id"] == "data.jsonl:12"


def test_malformed_json_line_keeps_the_raw_line():
    row = prepare_json_line('{"id": 1, "title": ', "data.jsonl:4", SPEC)
    assert (row["status"], row["reason"], row["id"]) == (rows.ERROR, "malformed_json", "data.jsonl:4")
    assert row["raw"] == '{"id": 1, "title": '


def test_non_object_record_is_an_error():
    row = prepare_json_line("[1, 2]", "data.jsonl:9", SPEC)
    assert row["reason"] == "not_an_object"
