"""The JSON reader streams JSON Lines a chunk at a time and gives exactly what reading the
whole file gives, on every shape of file and on hostile bytes."""

from __future__ import annotations

import json
import tracemalloc

import pyarrow as pa
import pytest

from extract import json_source
from extract.json_source import iter_json_records, stream_json_records

FILES = {
    "lines": b'{"id": 1, "text": "a"}\n{"id": 2, "text": "b"}\n',
    "blank lines and CRLF": b'\n\r\n{"id": 1}\r\n\n   \n{"id": 2}\r\n',
    "no final newline": b'{"id": 1}\n{"id": 2}',
    "first line malformed": b'{"id": 1, "text": \n{"id": 2}\n',
    "a malformed line later": b'{"id": 1}\n{"id": \n{"id": 3}\n',
    "first line an array, more lines": b'[1, 2]\n{"id": 2}\n',
    "one-line array": b'[{"id": 1}, {"id": 2}]\n',
    "pretty array": b'[\n  {"id": 1},\n  {"id": 2}\n]\n',
    "pretty object": b'{\n  "id": 1,\n  "text": "x"\n}\n',
    "one object": b'{"id": 1, "text": "x"}',
    "envelope one line": b'{"issues": [{"id": 1}, {"id": 2}]}\n',
    "envelope pretty": b'{\n "issues": [\n  {"id": 1}\n ]\n}\n',
    "envelope lines": b'{"issues": [{"id": 1}]}\n{"issues": [{"id": 2}]}\n',
    "malformed array": b'[{"id": 1}, {"id": 2}\n',
    "scalars": b'1\n2\n"three"\n',
    "not UTF-8, NUL, separators": b'{"id": "\xff\xfe", "text": "a\x00b"}\n{"id": 2, "text": "x\xe2\x80\xa8y"}\n',
    "a lone unicode blank line": "\u2028\n[\n1\n]\n".encode(),
    "too deep": b"[" * 100_000 + b"\n" + b'{"id": 2}\n',
    "empty": b"",
    "whitespace": b"  \n\n \t\n",
}


def streamed(data: bytes, envelope: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    return list(stream_json_records(pa.BufferReader(data), "f.jsonl", envelope))


@pytest.mark.parametrize("name", list(FILES))
@pytest.mark.parametrize("chunk", [3, 64, 1 << 20])
def test_streamed_records_are_the_whole_files(name, chunk, monkeypatch):
    monkeypatch.setattr(json_source, "_READ_BYTES", chunk)
    data = FILES[name]
    for envelope in ((), ("issues",)):
        assert streamed(data, envelope) == list(iter_json_records(data, "f.jsonl", envelope)), (name, envelope)


def test_json_lines_are_read_in_bounded_memory():
    line = json.dumps({"id": "x" * 40, "text": "a commit message, " * 20}).encode() + b"\n"
    data = line * ((40 << 20) // len(line))  # about 40 MiB
    tracemalloc.start()
    try:
        count = sum(1 for _ in stream_json_records(pa.BufferReader(data), "big.jsonl"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == data.count(b"\n")
    assert peak < 8 << 20, f"reading {len(data) >> 20} MiB of JSON Lines peaked at {peak >> 20} MiB"
