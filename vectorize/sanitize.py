"""What Postgres and Arrow can hold, and the documented rules for the characters they cannot.

Postgres ``text`` and ``jsonb`` refuse NUL; Postgres and Arrow refuse lone surrogates (what
invalid UTF-8 and JSON escapes like ``\\ud800`` become once decoded). The rules:

- **text and metadata**: NUL is removed and a lone surrogate becomes U+FFFD; the row is
  stored and counted as sanitized;
- **ids** are identity and are never altered: an id holding either, or longer than
  :data:`MAX_ID_BYTES` (the key's btree index holds at most 2,704 bytes), makes the record an
  error row (``bad_id``, ``id_too_long``);
- **error rows** keep what went wrong readable: NUL becomes the four characters ``\\x00`` and
  a lone surrogate its ``\\udXXX`` escape, so any raw record can be stored.
"""

from __future__ import annotations

import re
from typing import Any

MAX_ID_BYTES = 1024
MAX_METADATA_DEPTH = 500
_SURROGATE = re.compile("[\ud800-\udfff]")


class NotStorable(ValueError):
    """A value that the rules cannot make storable; ``reason`` is the error row's."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(reason, message)
        self.reason, self.message = reason, message


def is_clean(text: str) -> bool:
    """True when ``text`` holds neither NUL nor a lone surrogate."""
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def clean(text: str) -> str:
    """NUL removed, lone surrogates replaced by U+FFFD."""
    return _SURROGATE.sub("\ufffd", text.replace("\x00", ""))


def storable(text: str) -> str:
    """``text`` with NUL and lone surrogates written as escapes: for error rows' fields."""
    if is_clean(text):
        return text
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def usable_id(key: str) -> bool:
    """Whether ``key`` can be stored as it is, as an id."""
    return is_clean(key) and len(key.encode("utf-8")) <= MAX_ID_BYTES


def check_id(key: str, field: str) -> str:
    """The id as it is, or :class:`NotStorable` saying why it cannot be one."""
    if not is_clean(key):
        what = "a NUL character" if "\x00" in key else "invalid UTF-8 (a lone surrogate)"
        raise NotStorable("bad_id", f"id field {field!r} holds {what}; ids are stored exactly, so fix it at the source")
    size = len(key.encode("utf-8"))
    if size > MAX_ID_BYTES:
        raise NotStorable("id_too_long", f"id field {field!r} is {size:,} bytes; at most {MAX_ID_BYTES:,} are stored")
    return key


def check_depth(value: Any) -> None:
    """:class:`NotStorable` where ``value`` nests more than :data:`MAX_METADATA_DEPTH` levels."""
    level = [value]
    for _ in range(MAX_METADATA_DEPTH + 1):
        level = [v for item in level for v in _children(item)]
        if not level:
            return
    raise NotStorable("metadata_too_deep", f"the metadata is nested more than {MAX_METADATA_DEPTH} levels deep")


def _children(value: Any) -> list:
    if isinstance(value, dict):
        return list(value.values())
    return list(value) if isinstance(value, list) else []


def clean_metadata(value: Any, depth: int = 0) -> Any:
    """``value`` (parsed JSON) with every string, keys included, :func:`clean`-ed."""
    if depth > MAX_METADATA_DEPTH:
        raise NotStorable("metadata_too_deep", f"the metadata is nested more than {MAX_METADATA_DEPTH} levels deep")
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, dict):
        return {clean(str(k)): clean_metadata(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_metadata(v, depth + 1) for v in value]
    return value
