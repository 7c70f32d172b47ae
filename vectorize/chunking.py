"""Long texts: cut by the model's own tokens into overlapping chunks, or refused.

``--long-text chunk`` splits a text longer than the window into chunks of ``chunk_tokens``
tokens that overlap by ``chunk_overlap``; each chunk is the exact substring of the text its
tokens cover, so a stored chunk reads as the source wrote it. ``truncate`` leaves the cut to
the model (counted as truncated); ``error`` sends the row to the errors table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vectorize.errors import ConfigError
from vectorize.providers.base import ProviderSpec, TokenSpans

LONG_TEXT_MODES = ("truncate", "chunk", "error")
_LOADED: dict[str, TokenSpans] = {}


@dataclass(frozen=True)
class LongTextPolicy:
    mode: str  # truncate | chunk | error
    chunk_tokens: int
    chunk_overlap: int
    window: int  # tokens of text the model takes
    provider: Any = None  # the ProviderSpec whose tokens cut the texts

    @property
    def signature(self) -> str:
        return f"{self.mode}/{self.chunk_tokens}/{self.chunk_overlap}" if self.mode == "chunk" else self.mode

    def tokens(self) -> TokenSpans:
        """The provider's tokens, loaded once per process (a policy is copied into every task)."""
        key = f"{type(self.provider).__name__}/{self.provider.identity.key}"
        found = _LOADED.get(key)
        if found is None:
            found = _LOADED[key] = self.provider.token_spans()
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
    mode: str, chunk_tokens: int | None, chunk_overlap: int, provider: ProviderSpec, window: int | None = None
) -> LongTextPolicy:
    """Checked settings; the default chunk fills the model's window (``window`` tokens: its
    identity's unless given) less its special tokens and prefix."""
    if mode not in LONG_TEXT_MODES:
        raise ConfigError(f"--long-text {mode!r}: use one of {', '.join(LONG_TEXT_MODES)}")
    window = window if window is not None else provider.identity.max_tokens
    room = window - provider.prefix_tokens() - provider.special_tokens
    size = chunk_tokens if chunk_tokens is not None else room
    if not 1 <= size <= room:
        raise ConfigError(f"--chunk-tokens {size}: the model takes at most {room} tokens of text (at least 1)")
    if not 0 <= chunk_overlap < size:
        raise ConfigError(f"--chunk-overlap {chunk_overlap}: use 0 or more, and less than --chunk-tokens ({size})")
    return LongTextPolicy(mode, size, chunk_overlap, room, provider)
