"""A JSON Lines file of real texts with hostile records planted among them, and what each
planted line must become: stored (possibly sanitized) or an error row with its reason."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class PoisonCorpus:
    path: Path
    lines: int = 0
    stored: set[str] = field(default_factory=set)  # ids that must be stored
    sanitized: set[str] = field(default_factory=set)  # of those, the ones the rules change
    failed: dict[str, str] = field(default_factory=dict)  # error row key -> reason


def _line(record: dict) -> bytes:
    return json.dumps(record).encode() + b"\n"


def write_poison_corpus(path: Path, texts: list[str], *, every: int = 3) -> PoisonCorpus:
    """``texts`` as good records, with a hostile line after every ``every`` of them."""
    corpus = PoisonCorpus(path)
    hostile: list[tuple[bytes, str | None, str | None]] = [  # line, stored id, or error reason
        (b'{"id": "nul-raw", "text": "before\x00after"}\n', "nul-raw", None),
        (_line({"id": "nul-escaped", "text": "a\u0000b", "meta": "x\u0000y"}), "nul-escaped", None),
        (_line({"id": "nul\u0000id", "text": "fine text"}), None, "bad_id"),
        (_line({"id": "surrogate-text", "text": "half \ud800 a pair"}), "surrogate-text", None),
        (_line({"id": "surrogate-meta", "text": "fine", "tags": ["\udfff", {"\ud83d": 1}]}), "surrogate-meta", None),
        (_line({"id": "bad\ud800id", "text": "fine"}), None, "bad_id"),
        (b'{"id": "bad-\xff-utf8", "text": "bytes"}\n', None, "bad_id"),
        (b'{"id": "utf8-text", "text": "caf\xc3\xa9 \xff\xfe"}\n', "utf8-text", None),
        (_line({"id": "x" * 3000, "text": "a long id"}), None, "id_too_long"),
        (_line({"id": "deep-meta", "text": "deep", "nest": _nested(300)}), "deep-meta", None),
        (_line({"id": "too-deep-meta", "text": "deep", "nest": _nested(700)}), None, "metadata_too_deep"),  # by id
        (b'{"id": "deep-json", "a": ' + b"[" * 5000 + b"]" * 5000 + b"}\n", None, "malformed_json"),
        (_line({"id": "big", "text": "word " * 600_000}), "big", None),
        (b'{"id": "line-sep", "text": "one\xe2\x80\xa8two\xc2\x85three"}\n', "line-sep", None),  # raw U+2028, U+0085
        (b"\x00\x00\x00 not json at all\n", None, "malformed_json"),
        (_line({"id": 4242, "text": "an int id"}), "4242", None),
        (_line({"id": "4242", "text": "the same id as a string"}), None, "duplicate_id"),
        (_line({"id": "dup", "text": "first of two"}), "dup", None),
        (_line({"id": "dup", "text": "second of two"}), None, "duplicate_id"),
    ]
    sanitized = {"nul-raw", "nul-escaped", "surrogate-text", "surrogate-meta", "utf8-text"}
    out = bytearray()
    number = 0
    good = iter(texts)
    for line, stored, reason in hostile:
        for _ in range(every):
            number += 1
            key = f"good-{number}"
            out += _line({"id": key, "text": next(good), "author": "someone"})
            corpus.stored.add(key)
        number += 1
        out += line
        if stored is not None:
            corpus.stored.add(stored)
        elif reason == "metadata_too_deep":
            corpus.failed["too-deep-meta"] = reason  # the id is sound: the error row has it
        else:
            corpus.failed[f"{path.resolve()}:{number}"] = reason  # keyed by the line's position
    corpus.sanitized = sanitized
    corpus.lines = number
    path.write_bytes(bytes(out))
    return corpus


def _nested(depth: int) -> object:
    value: object = "leaf"
    for _ in range(depth):
        value = {"d": value}
    return value
