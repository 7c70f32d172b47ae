"""Text preparation: the exact text that is embedded, and its content hash."""

from __future__ import annotations

import hashlib
import re
import string
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from vectorize.errors import ConfigError

# C0/C1 control characters except the whitespace ones, which collapse instead.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def clean_text(text: str) -> str:
    """Unicode NFC, control characters removed, runs of whitespace collapsed.

    Paragraph breaks survive as one blank line and line breaks as one newline, so that
    commit messages and tickets keep their shape; everything else collapses to one space:
    each line's whitespace runs become one space, its edges none, and runs of blank lines one.
    """
    text = unicodedata.normalize("NFC", text)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.replace("\n", "").replace("\t", "").isprintable():  # printable text has no control character
        text = _CONTROL.sub("", text)
    kept: list[str] = []
    blank = False
    for line in text.split("\n"):
        words = line.split()
        if not words:
            blank = True
            continue
        if blank and kept:
            kept.append("")
        kept.append(" ".join(words))
        blank = False
    return "\n".join(kept)


def content_hash(text: str) -> str:
    """Hex sha256 of the exact text that is embedded."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TextTemplate:
    """How a record becomes the text to embed: ``"{title}\\n\\n{body}"`` or a bare field name."""

    pattern: str

    @classmethod
    def parse(cls, spec: str) -> TextTemplate:
        spec = spec.replace("\\n", "\n").replace("\\t", "\t")
        if "{" not in spec:
            spec = "{" + spec + "}"
        template = cls(spec)
        template.fields  # noqa: B018  (validates the pattern now, not per row)
        return template

    @property
    def fields(self) -> tuple[str, ...]:
        return _fields(self.pattern)

    def render(self, values: dict[str, str]) -> str:
        """The text; a line whose fields are all empty is left out, and so is a paragraph
        whose fields are all empty (with its headings, like "Comments:")."""
        kept = []
        for paragraph in _paragraphs(self.pattern):
            lines = [(line, names) for line, names in paragraph if not names or any(_filled(values[n]) for n in names)]
            has_fields = any(names for _, names in paragraph)
            if has_fields and not any(names for _, names in lines):
                continue
            kept.append("\n".join(line for line, _ in lines))
        return "\n\n".join(kept).format_map(values)


@lru_cache(maxsize=64)
def _fields(pattern: str) -> tuple[str, ...]:
    names: list[str] = []
    try:
        parsed = list(string.Formatter().parse(pattern))
    except ValueError as exc:
        raise ConfigError(f"--text {pattern!r} is not a valid template: {exc}") from None
    for _, field, _, _ in parsed:
        if field is None:
            continue
        if not field or not field.isidentifier():
            raise ConfigError(f"--text {pattern!r}: use plain field names in braces, like {{title}}")
        if field not in names:
            names.append(field)
    return tuple(names)


def _filled(value: object) -> bool:
    return value is not None and str(value).strip() != ""


@lru_cache(maxsize=64)
def _paragraphs(pattern: str) -> tuple[tuple[tuple[str, tuple[str, ...]], ...], ...]:
    """The pattern's paragraphs, as lines with the fields each line uses."""
    formatter = string.Formatter()
    return tuple(
        tuple((line, tuple(f for _, f, _, _ in formatter.parse(line) if f)) for line in paragraph.split("\n"))
        for paragraph in pattern.split("\n\n")
    )
