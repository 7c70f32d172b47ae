"""Several texts end to end in one row of the encoder, each attending only to itself.

On a CPU a forward pass costs about the same for a padding token as for a text token, and a
batch padded to its longest text is half padding when lengths vary, as in Serve's batches of
single short requests. Packing lays the texts end to end in rows of ``row_tokens`` (first fit,
longest first). A block-diagonal attention mask keeps each text to itself and its position ids
restart at 0, so a text gets the vector it gets alone. The rows are then cut back into one
sequence per text for the model's own pooling and normalisation modules.

Used only where that holds: a SentenceTransformers ``Transformer`` module whose model uses sdpa
attention and takes ``position_ids``, and whose packed vectors match its padded ones on probe
texts when it loads (``packed_encoder``).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

ROW_TOKENS = 64  # the fastest of 64, 128 and 256 for all-MiniLM-L6-v2 on CPU threads
PROBE_TEXTS = (
    "a",
    "Fix the off-by-one error in the pager",
    "Merge pull request #12 from a branch with a long name, and then some more words to make it longer",
    "word " * 600,  # past any model's window: truncation must match too
)
PROBE_TOLERANCE = 1e-4


@dataclass(frozen=True)
class PackedRows:
    """Token rows for the encoder, and where each text's tokens lie in them."""

    input_ids: np.ndarray  # (rows, width)
    position_ids: np.ndarray  # (rows, width)
    attention_mask: np.ndarray  # (rows, 1, width, width), True where a token may attend
    gather: np.ndarray  # (texts, longest): flat index into rows × width of each text's tokens
    token_mask: np.ndarray  # (texts, longest): 1 for a text's tokens, 0 past its end


def pack(token_ids: Sequence[Sequence[int]], row_tokens: int = ROW_TOKENS) -> PackedRows:
    lengths = [len(ids) for ids in token_ids]
    capacity = max(row_tokens, *lengths)
    rows: list[list[int]] = []
    room: list[int] = []
    for text in sorted(range(len(lengths)), key=lengths.__getitem__, reverse=True):
        row = next((r for r, free in enumerate(room) if lengths[text] <= free), None)
        if row is None:
            row = len(rows)
            rows.append([])
            room.append(capacity)
        rows[row].append(text)
        room[row] -= lengths[text]
    width = capacity - min(room)
    input_ids = np.zeros((len(rows), width), dtype=np.int64)
    position_ids = np.zeros_like(input_ids)
    segment = np.full((len(rows), width), -1, dtype=np.int64)
    gather = np.zeros((len(lengths), max(lengths)), dtype=np.int64)
    token_mask = np.zeros_like(gather)
    for row, members in enumerate(rows):
        start = 0
        for text in members:
            end = start + lengths[text]
            input_ids[row, start:end] = token_ids[text]
            position_ids[row, start:end] = np.arange(lengths[text])
            segment[row, start:end] = text
            gather[text, : lengths[text]] = np.arange(row * width + start, row * width + end)
            token_mask[text, : lengths[text]] = 1
            start = end
    same_text = (segment[:, :, None] == segment[:, None, :]) & (segment[:, :, None] >= 0)
    attention_mask = same_text | np.eye(width, dtype=bool)  # a padding token attends to itself alone
    return PackedRows(input_ids, position_ids, attention_mask[:, None], gather, token_mask)


class PackedEncoder:
    """Runs a SentenceTransformer on packed rows: its transformer's model, then its other modules."""

    def __init__(self, model, row_tokens: int = ROW_TOKENS) -> None:
        self.encoder = model[0].auto_model
        self.after = list(model)[1:]
        self.row_tokens = row_tokens
        self.takes_token_types = "token_type_ids" in inspect.signature(self.encoder.forward).parameters

    def encode(self, token_ids: Sequence[Sequence[int]]) -> np.ndarray:
        import torch

        rows = pack(token_ids, self.row_tokens)
        inputs = {
            "input_ids": torch.from_numpy(rows.input_ids),
            "position_ids": torch.from_numpy(rows.position_ids),
            "attention_mask": torch.from_numpy(rows.attention_mask),
        }
        if self.takes_token_types:
            inputs["token_type_ids"] = torch.zeros_like(inputs["input_ids"])
        with torch.inference_mode():
            hidden = self.encoder(**inputs)[0]
            flat = hidden.reshape(-1, hidden.shape[-1])
            features = {
                "token_embeddings": flat[torch.from_numpy(rows.gather)],
                "attention_mask": torch.from_numpy(rows.token_mask),
            }
            for module in self.after:
                features = module(features)
        return features["sentence_embedding"].float().numpy()


def packed_encoder(
    model,
    token_ids: Callable[[list[str]], list[list[int]]],
    padded: Callable[[list[str]], np.ndarray],
) -> PackedEncoder | None:
    """A packed encoder for ``model`` when it gives the vectors of its padded path, else None.

    ``token_ids`` gives the model's token ids of texts, truncated as the model truncates them;
    ``padded`` gives the vectors of texts through the model's padded path.
    """
    reason = _unsupported(model)
    if reason is None:
        encoder = PackedEncoder(model)
        texts = list(PROBE_TEXTS)
        difference = float(np.abs(encoder.encode(token_ids(texts)) - padded(texts)).max())
        if difference <= PROBE_TOLERANCE:
            return encoder
        reason = f"its packed vectors differ from its padded ones by {difference:.2g}"
    logger.info("texts are padded, not packed: %s", reason)
    return None


def _unsupported(model) -> str | None:
    modules = list(model)
    first = modules[0] if modules else None
    encoder = getattr(first, "auto_model", None)
    if type(first).__name__ != "Transformer" or encoder is None:
        return "the model does not start with a plain Transformer module"
    attention = getattr(encoder.config, "_attn_implementation", None)
    if attention != "sdpa":
        return f"its attention is {attention!r}, not sdpa"
    if "position_ids" not in inspect.signature(encoder.forward).parameters:
        return "its model takes no position ids"
    return None
