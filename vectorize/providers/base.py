"""The small interface every embedding provider keeps.

The batch job's actors and the Serve deployment both hold a provider and call the same
methods, so a text gets the same vector whichever path it takes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from vectorize.identity import ModelIdentity


@dataclass
class EmbeddedBatch:
    """Vectors for a list of texts, in input order, with what it cost."""

    vectors: np.ndarray  # float32, shape (n, dimensions)
    token_counts: list[int]  # tokens of each text before truncation
    truncated: list[bool]  # True where the text was cut to the model's window
    problems: list[RowProblem | None] | None = None  # why a text got no vector; None: all did
    stopped: str | None = None  # the provider refused the run while this batch was sent


@dataclass(frozen=True)
class RowProblem:
    """Why one text got no vector: a reason code for the errors table and a message."""

    reason: str
    message: str


class EmbeddingProvider(Protocol):
    identity: ModelIdentity
    max_batch_inputs: int

    def embed(self, texts: Sequence[str]) -> EmbeddedBatch:
        """Embed non-empty texts; float32 vectors, normalised when the model says so."""
        ...

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens each text would take, before truncation."""
        ...


def as_float32_rows(vectors: np.ndarray, normalize: bool) -> np.ndarray:
    """float32 vectors, re-normalised in float32 when the model normalises (fp16 drifts)."""
    out = np.asarray(vectors, dtype=np.float32)
    if normalize:
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
    return out
