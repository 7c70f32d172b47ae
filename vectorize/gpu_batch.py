"""Texts per forward pass on a GPU: as many as fit the card.

A forward pass's memory grows with (texts x tokens); the longest texts of a run decide whether
a batch fits. So one probe pass of ``PROBE_TEXTS`` texts at the model's full window measures
the bytes one text needs at worst, and the batch is the largest power of two whose worst case
fits in a share of the memory that is free, up to a cap past which a bigger batch only adds
latency (the card is already busy).
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

PROBE_TEXTS = 8
MEMORY_SHARE = 0.6  # of the free memory: the rest stays for the allocator's fragmentation and other actors
MIN_BATCH, MAX_BATCH = 16, 1024


def batch_for_memory(free_bytes: int, bytes_per_text: float) -> int:
    """The largest power of two in [MIN_BATCH, MAX_BATCH] whose texts fit in MEMORY_SHARE of
    ``free_bytes`` at ``bytes_per_text`` each."""
    if bytes_per_text <= 0:
        return MAX_BATCH
    fits = int(free_bytes * MEMORY_SHARE / bytes_per_text)
    size = MIN_BATCH
    while size * 2 <= min(fits, MAX_BATCH):
        size *= 2
    return size


def probe_gpu_batch(model, max_tokens: int) -> int:
    """Measure the memory one full-window text takes in ``model`` (a SentenceTransformer on a
    CUDA device) and size the batch from the memory free now."""
    import torch

    device = model.device
    text = " ".join(["token"] * max_tokens)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    model.encode([text] * PROBE_TEXTS, batch_size=PROBE_TEXTS, convert_to_numpy=True, show_progress_bar=False)
    torch.cuda.synchronize(device)
    per_text = (torch.cuda.max_memory_allocated(device) - before) / PROBE_TEXTS
    free, _total = torch.cuda.mem_get_info(device)
    size = batch_for_memory(free, per_text)
    logger.info(
        "GPU batch: %d texts (%.1f MiB a full-window text, %.0f MiB free)",
        size,
        per_text / 2**20,
        free / 2**20,
    )
    return size
