"""Long texts: cut by the model's own tokens into overlapping chunks, or refused.

``--long-text chunk`` splits a text longer than the window into chunks of ``chunk_tokens``
tokens that overlap by ``chunk_overlap``; each chunk is the exact substring of the text its
tokens cover, so a stored chunk reads as the source wrote it. ``truncate`` leaves the cut to
the model (counted as truncated); ``error`` sends the row to the errors table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from vectorize.errors import ConfigError

LONG_TEXT_MODES = ("truncate", "chunk", "error")
SPECIAL_TOKENS = 2  # [CLS] and [SEP], or their kind, around every input of a local model
_LOADED: dict[str, TokenSpans] = {}


class TokenSpans(Protocol):
    def spans(self, text: str) -> list[tuple[int, int]]:
        """The (start, end) character offsets of the text's tokens, in order."""
        ...


class LocalTokenSpans:
    """The tokens of a local model's own (fast) tokenizer."""

    def __init__(self, model_dir: str) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)

    def spans(self, text: str) -> list[tuple[int, int]]:
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        return [tuple(span) for span in encoded["offset_mapping"]]


@dataclass(frozen=True)
class LongTextPolicy:
    mode: str  # truncate | chunk | error
    chunk_tokens: int
    chunk_overlap: int
    window: int  # tokens the model takes
    local_model_dir: str | None = None  # where the tokenizer is; None: a remote model's counter
    remote: object = None  # RemoteSettings of a remote model

    @property
    def signature(self) -> str:
        return f"{self.mode}/{self.chunk_tokens}/{self.chunk_overlap}" if self.mode == "chunk" else self.mode

    def tokens(self) -> TokenSpans:
        """The tokenizer, loaded once per process (a policy is copied into every task)."""
        key = self.local_model_dir or repr(self.remote)
        found = _LOADED.get(key)
        if found is None:
            if self.local_model_dir is not None:
                found = LocalTokenSpans(self.local_model_dir)
            else:
                from vectorize.providers.api import token_counter

                found = token_counter(self.remote)  # type: ignore[arg-type]
            _LOADED[key] = found
        return found

    def split(self, text: str) -> list[str] | None:
        """The chunks of ``text`` (one chunk: the text itself), or None when it is too long
        and the mode is ``error``. Texts too short to need it are not tokenized."""
        limit = self.chunk_tokens if self.mode == "chunk" else self.window
        if self.mode == "truncate" or len(text.encode("utf-8")) <= limit:
            return [text]
        spans = self.tokens().spans(text)
        if len(spans) <= limit:
            return [text]
        if self.mode == "error":
            return None
        return chunk_by_spans(text, spans, self.chunk_tokens, self.chunk_overlap)


def chunk_by_spans(text: str, spans: Sequence[tuple[int, int]], size: int, overlap: int) -> list[str]:
    step = size - overlap
    chunks = []
    for start in range(0, len(spans), step):
        end = min(start + size, len(spans))
        chunks.append(text[spans[start][0] : spans[end - 1][1]].strip())
        if end == len(spans):
            break
    return [c for c in chunks if c]


def long_text_policy(
    mode: str, chunk_tokens: int | None, chunk_overlap: int, window: int, prefix_tokens: int = 0, **where
) -> LongTextPolicy:
    """Checked settings; the default chunk fills the window less the special tokens and prefix."""
    if mode not in LONG_TEXT_MODES:
        raise ConfigError(f"--long-text {mode!r}: use one of {', '.join(LONG_TEXT_MODES)}")
    room = window - prefix_tokens - (SPECIAL_TOKENS if where.get("local_model_dir") else 0)
    size = chunk_tokens if chunk_tokens is not None else room
    if not 1 <= size <= room:
        raise ConfigError(f"--chunk-tokens {size}: the model takes at most {room} tokens of text (at least 1)")
    if not 0 <= chunk_overlap < size:
        raise ConfigError(f"--chunk-overlap {chunk_overlap}: use 0 or more, and less than --chunk-tokens ({size})")
    return LongTextPolicy(mode, size, chunk_overlap, room, **where)


def model_dir_of(spec: str) -> str:
    from vectorize.models import resolve_model_dir

    return str(resolve_model_dir(spec)[1])
