"""JSON, JSON Lines and their gzip forms, read so that one bad line cannot sink a file.

Ray's own JSON reader fails the whole read on one malformed line; this one hands every
line on as raw text with its position, and preparation parses it, sending a malformed
line to the errors table.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import ClassVar

import pyarrow as pa
from ray.data.block import Block
from ray.data.datasource import FileBasedDatasource

RAW_COLUMN = "_raw"
POSITION_COLUMN = "_pos"
JSON_SUFFIXES = (".jsonl", ".ndjson", ".json", ".jsonl.gz", ".ndjson.gz", ".json.gz")
_SCHEMA = pa.schema([(RAW_COLUMN, pa.string()), (POSITION_COLUMN, pa.string())])
_ROWS_PER_BLOCK = 4096


def iter_json_records(data: bytes, path: str) -> Iterator[tuple[str, str]]:
    """(raw record text, "path:line") for each record: array elements or non-blank lines."""
    text = data.decode("utf-8", errors="replace")
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except ValueError as exc:
            yield text, f"{path}:{exc.lineno if hasattr(exc, 'lineno') else 1}"  # malformed as a whole
            return
        for i, item in enumerate(items):
            yield json.dumps(item, ensure_ascii=False), f"{path}[{i}]"
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield line, f"{path}:{number}"


class JsonRecordsDatasource(FileBasedDatasource):
    _FILE_EXTENSIONS: ClassVar[list[str]] = ["json", "jsonl", "ndjson", "gz"]

    def _read_stream(self, f: pa.NativeFile, path: str) -> Iterator[Block]:
        raws: list[str] = []
        positions: list[str] = []
        for raw, position in iter_json_records(f.readall(), path):
            raws.append(raw)
            positions.append(position)
            if len(raws) >= _ROWS_PER_BLOCK:
                yield pa.table([raws, positions], schema=_SCHEMA)
                raws, positions = [], []
        if raws:
            yield pa.table([raws, positions], schema=_SCHEMA)
