"""The columns a row carries through the pipeline, from preparation to the sink.

Every row read reaches the sink with one status, so the sink's counts add up to the rows
read and nothing is dropped silently:

- ``embed``: new or changed text; the embedder fills ``embedding``, ``tokens``, ``truncated``
- ``reuse``: the same text is stored already, or an earlier row of this run claimed it;
  its vector is copied from there at the end of the run
- ``unchanged``: this (id, chunk) already holds this text under this model, from the same
  source row (its fingerprint)
- ``refresh``: the same text, but the row's metadata or fingerprint changed: those are updated
- ``error``: ``stage``, ``reason``, ``message`` and ``raw`` say what went wrong
"""

from __future__ import annotations

import pyarrow as pa

from vectorize.sanitize import storable

EMBED = "embed"
REUSE = "reuse"
UNCHANGED = "unchanged"
REFRESH = "refresh"
ERROR = "error"
# the stages of errors the source itself causes (a record unread, a text that cannot be made):
# the same source gives them again, whatever the model
SOURCE_ERROR_STAGES = ("read", "prepare")

PREPARED_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("chunk", pa.int32()),
        ("text", pa.string()),
        ("text_sha256", pa.string()),
        ("metadata", pa.string()),
        ("status", pa.string()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("message", pa.string()),
        ("raw", pa.string()),
        ("fingerprint", pa.string()),  # the source row's; unchanged fingerprint: nothing to do
        ("chunks", pa.int32()),  # how many chunks the record has now; stored ones past it go
        ("sanitized", pa.bool_()),  # text or metadata changed by vectorize.sanitize's rules
        ("new", pa.bool_()),  # no row of this (id, chunk) was stored when the run prepared it
    ]
)


def embed_row(key: str, text: str, text_sha256: str, metadata: str | None, sanitized: bool) -> dict:
    """A row to embed: a record's text, cleaned, and its metadata as JSON."""
    return {
        "id": key,
        "chunk": 0,
        "text": text,
        "text_sha256": text_sha256,
        "metadata": metadata,
        "status": EMBED,
        "stage": None,
        "reason": None,
        "message": None,
        "raw": None,
        "fingerprint": None,
        "chunks": 1,
        "sanitized": sanitized,
    }


def error_row(key: str, stage: str, reason: str, message: str, raw: str | None) -> dict:
    """An error row; its fields are made storable (``vectorize.sanitize.storable``), so any record can be one."""
    return {
        "id": storable(key),
        "chunk": 0,
        "text": None,
        "text_sha256": None,
        "metadata": None,
        "status": ERROR,
        "stage": stage,
        "reason": reason,
        "message": storable(message),
        "raw": storable(raw[:20_000]) if raw else raw,
        "fingerprint": None,
        "chunks": None,
        "sanitized": False,
    }
