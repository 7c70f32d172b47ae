"""How one raw record becomes a prepared row: id, the exact text to embed, its hash, metadata.

A record that cannot give a usable id or text becomes an error row with the reason and the
raw record, never a silent drop.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vectorize import rows
from vectorize.sanitize import (
    MAX_METADATA_DEPTH,
    NotStorable,
    check_depth,
    check_id,
    clean,
    clean_metadata,
    is_clean,
    usable_id,
)
from vectorize.text import TextTemplate, clean_text, content_hash


class RecordError(ValueError):
    """Raised inside preparation when a record cannot be read; it becomes the record's error
    row (``reason`` is its short code), never an exception of the run."""

    def __init__(self, reason: str, message: str, key: str | None = None) -> None:
        super().__init__(reason, message, key)
        self.reason, self.message, self.key = reason, message, key


@dataclass(frozen=True)
class RecordSpec:
    """``flatten`` turns a source's raw object (a Jira issue, a GitHub item) into flat fields;
    ``metadata_fields`` names the fields kept as metadata (None: every field not in the text)."""

    id_field: str
    template: TextTemplate
    flatten: Callable[[Any], dict[str, str]] | None = None
    metadata_fields: tuple[str, ...] | None = None


def raw_text(record: Any) -> str:
    try:
        return json.dumps(record, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(record)


def fallback_key(raw: str, position: str | None) -> str:
    """The key of an error row whose id is unusable: where the record is, else a digest of it."""
    if position and usable_id(position):
        return position
    return "record:" + hashlib.sha256(raw.encode("utf-8", "replace")).hexdigest()[:16]


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", bool: "a boolean", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )


def _keyed_error(key: str, stage: str, reason: str, message: str, raw: str | None) -> dict:
    """An error row under the record's own id (``keyed``: the id is the record's, so it is one of
    the ids a run holds once; an error row under a position or digest is not)."""
    return {**rows.error_row(key, stage, reason, message, raw), "keyed": True}


def prepare_record(record: Any, spec: RecordSpec, position: str | None = None, raw: str | None = None) -> dict:
    """A row of :data:`vectorize.rows.PREPARED_SCHEMA` with status ``embed`` or ``error``; text
    and metadata follow :mod:`vectorize.sanitize`'s rules (``sanitized`` says they were changed)."""
    raw = raw if raw is not None else raw_text(record)
    if spec.flatten is not None:
        try:
            record = spec.flatten(record)
        except RecordError as exc:
            if exc.key and usable_id(exc.key):
                return _keyed_error(exc.key, "prepare", exc.reason, exc.message, raw)
            return rows.error_row(fallback_key(raw, position), "prepare", exc.reason, exc.message, raw)
    if not isinstance(record, dict):
        return rows.error_row(
            fallback_key(raw, position),
            "prepare",
            "not_an_object",
            f"record is {_type_name(record)}, not an object",
            raw,
        )
    key = record.get(spec.id_field)
    if key is None or key == "":
        return rows.error_row(fallback_key(raw, position), "prepare", "missing_id", f"no {spec.id_field!r} field", raw)
    if isinstance(key, bool) or not isinstance(key, str | int):
        return rows.error_row(
            fallback_key(raw, position),
            "prepare",
            "bad_id",
            f"id field {spec.id_field!r} is {_type_name(key)}, expected a string or an integer",
            raw,
        )
    try:
        key = check_id(str(key), spec.id_field)
    except NotStorable as exc:
        return rows.error_row(fallback_key(raw, position), "prepare", exc.reason, exc.message, raw)
    values: dict[str, str] = {}
    sanitized = False
    for name in spec.template.fields:
        value = record.get(name)
        if value is None:
            if name in record:
                return _keyed_error(key, "prepare", "null_text", f"text field {name!r} is null", raw)
            return _keyed_error(key, "prepare", "missing_text", f"no {name!r} field", raw)
        if not isinstance(value, str):
            return _keyed_error(
                key, "prepare", "not_a_string", f"text field {name!r} is {_type_name(value)}, not a string", raw
            )
        if not is_clean(value):
            value, sanitized = clean(value), True
        values[name] = value
    text = clean_text(spec.template.render(values))
    if not text:
        return _keyed_error(key, "prepare", "empty_text", "the text is empty after cleaning", raw)
    used = {spec.id_field, *spec.template.fields}
    kept = spec.metadata_fields if spec.metadata_fields is not None else record.keys()
    try:
        metadata, cleaned = _metadata_json({k: record[k] for k in kept if k not in used and k in record})
    except NotStorable as exc:
        return _keyed_error(key, "prepare", exc.reason, exc.message, raw)
    return {**rows.embed_row(key, text, content_hash(text), metadata, sanitized or cleaned), "keyed": True}


def _metadata_json(metadata: dict) -> tuple[str, bool]:
    """The metadata as JSON that jsonb takes, and whether the sanitizing rules changed it."""
    try:
        dumped = json.dumps(metadata, ensure_ascii=False, default=str, sort_keys=True)
        if dumped.count("{") + dumped.count("[") > MAX_METADATA_DEPTH:
            check_depth(metadata)
        if "\\u0000" not in dumped and is_clean(dumped):
            return dumped, False
        cleaned = json.dumps(clean_metadata(metadata), ensure_ascii=False, default=str, sort_keys=True)
    except RecursionError:
        raise NotStorable("metadata_too_deep", "the metadata is nested too deep to store") from None
    return cleaned, cleaned != dumped


def prepare_json_line(raw: str, position: str, spec: RecordSpec) -> dict:
    try:
        record = json.loads(raw, strict=False)  # control characters inside strings: the rules above remove them
    except ValueError as exc:
        return rows.error_row(fallback_key(raw, position), "read", "malformed_json", f"malformed JSON: {exc}", raw)
    except RecursionError:
        message = "the JSON is nested too deep to read"
        return rows.error_row(fallback_key(raw, position), "read", "malformed_json", message, raw)
    return prepare_record(record, spec, position, raw)
