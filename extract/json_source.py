"""JSON, JSON Lines and their gzip forms, read so that one bad line cannot sink a file.

Ray's own JSON reader fails the whole read on one malformed line; this one hands every
line on as raw text with its position, and preparation parses it, sending a malformed
line to the errors table.

Lines are split on ``\n`` only (JSON text may hold U+2028 and other line separators) and
decoded with ``surrogateescape``: a byte that is not UTF-8 survives as a lone surrogate, which
preparation then refuses in an id and replaces in text (:mod:`vectorize.sanitize`). The raw
column is binary, so the line travels exactly as the file has it.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import ClassVar

import pyarrow as pa
from ray.data.block import Block
from ray.data.datasource import FileBasedDatasource

RAW_COLUMN = "_raw"
POSITION_COLUMN = "_pos"
_SCHEMA = pa.schema([(RAW_COLUMN, pa.binary()), (POSITION_COLUMN, pa.string())])
_ROWS_PER_BLOCK = 4096
_READ_BYTES = 1 << 20


def decode_raw(raw: bytes | str) -> str:
    """A raw record as :func:`iter_json_records` gave it (a SQL source's come as text)."""
    return raw if isinstance(raw, str) else raw.decode("utf-8", "surrogateescape")


def iter_json_records(data: bytes, path: str, envelope: tuple[str, ...] = ()) -> Iterator[tuple[str, str]]:
    """(raw record text, "path:line") for each record: array elements, non-blank lines, or one
    object spread over many lines. An object with an ``envelope`` key holding a list (an API's
    page, like Jira's ``{"issues": [...]}``) gives the list's elements."""
    text = data.decode("utf-8", errors="surrogateescape")
    head = text.lstrip()[:1]
    whole = None
    if head in ("[", "{"):
        try:
            whole = json.loads(text, strict=False)
        except RecursionError:
            pass  # a line nested too deep: read line by line, where it is one error row
        except ValueError as exc:
            # "Extra data": a first value, then more: JSON Lines whose first line is an array
            if head == "[" and not str(exc).startswith("Extra data"):
                yield text, f"{path}:{getattr(exc, 'lineno', 1)}"  # an array, malformed as a whole
                return
    if whole is not None:
        items = whole if isinstance(whole, list) else [whole]
        for i, item in enumerate(items):
            where = f"{path}[{i}]" if isinstance(whole, list) else f"{path}:1"
            yield from _unwrap(json.dumps(item), item, where, envelope)
        return
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if line.strip():
            yield from _unwrap(line, None, f"{path}:{number}", envelope)


def _unwrap(raw: str, parsed: object, where: str, envelope: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    if envelope and any(f'"{key}"' in raw for key in envelope):
        if parsed is None:
            try:
                parsed = json.loads(raw, strict=False)
            except (ValueError, RecursionError):
                parsed = None
        for key in envelope:
            if isinstance(parsed, dict) and isinstance(parsed.get(key), list):
                for i, item in enumerate(parsed[key]):
                    yield json.dumps(item), f"{where}.{key}[{i}]"
                return
    yield raw, where


def stream_json_records(f: pa.NativeFile, path: str, envelope: tuple[str, ...] = ()) -> Iterator[tuple[str, str]]:
    """What :func:`iter_json_records` gives for the whole file, read a chunk at a time where the
    file is JSON Lines: its first non-blank line is a whole value and more lines follow. Any
    other file (an array or object over many lines, a first line that does not parse) is read
    whole, as only the whole can be parsed."""
    lines = _file_lines(f)
    head: list[bytes] = []  # the lines up to the first non-blank one, then up to the second
    for line in lines:
        head.append(line)
        if decode_raw(line).strip():
            break
    first = decode_raw(head[-1]).strip()
    if first[:1] in ("[", "{"):
        try:
            json.loads(first, strict=False)
        except RecursionError:
            pass  # too deep to parse: line by line, where it is one error row
        except ValueError:
            yield from iter_json_records(b"\n".join([*head, *lines]), path, envelope)
            return
        for line in lines:
            head.append(line)
            if decode_raw(line).strip():
                break
        else:  # one value alone in the file
            yield from iter_json_records(b"\n".join(head), path, envelope)
            return
    for number, line in enumerate(itertools.chain(head, lines), start=1):
        text = decode_raw(line.removesuffix(b"\r"))
        if text.strip():
            yield from _unwrap(text, None, f"{path}:{number}", envelope)


def _file_lines(f: pa.NativeFile) -> Iterator[bytes]:
    """The file's lines split on ``\\n`` (a byte UTF-8 uses for nothing else), the last one
    included even when empty, as ``str.split`` gives them."""
    pending = b""
    while chunk := f.read(_READ_BYTES):
        pieces = (pending + chunk).split(b"\n")
        pending = pieces.pop()
        yield from pieces
    yield pending


class JsonRecordsDatasource(FileBasedDatasource):
    _FILE_EXTENSIONS: ClassVar[list[str]] = ["json", "jsonl", "ndjson", "gz"]

    def __init__(self, paths: list[str], envelope: tuple[str, ...] = ()) -> None:
        super().__init__(paths)
        self.envelope = envelope

    def _read_stream(self, f: pa.NativeFile, path: str) -> Iterator[Block]:
        raws: list[bytes] = []
        positions: list[str] = []
        for raw, position in stream_json_records(f, path, self.envelope):
            raws.append(raw.encode("utf-8", "surrogateescape"))
            positions.append(position)
            if len(raws) >= _ROWS_PER_BLOCK:
                yield pa.table([raws, positions], schema=_SCHEMA)
                raws, positions = [], []
        if raws:
            yield pa.table([raws, positions], schema=_SCHEMA)
