"""Between a batch of prepared rows and a provider: which texts to embed, and the rows with
their vectors (or their error) attached, in the shape the sink writes."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vectorize import rows
from vectorize.providers.base import EmbeddedBatch, RowProblem


def texts_to_embed(batch: pa.Table) -> tuple[np.ndarray, list[str]]:
    """Positions of the rows with status ``embed`` and their texts."""
    todo = np.flatnonzero(pc.equal(batch.column("status"), rows.EMBED).to_numpy(zero_copy_only=False))
    texts = batch.column("text").take(pa.array(todo, pa.int64())).to_pylist() if len(todo) else []
    return todo, texts


def empty_result(dimensions: int) -> EmbeddedBatch:
    return EmbeddedBatch(np.zeros((0, dimensions), np.float32), [], [], [])


def attach_vectors(batch: pa.Table, todo: np.ndarray, result: EmbeddedBatch, dimensions: int) -> pa.Table:
    """The batch with ``embedding``, ``tokens`` and ``truncated`` columns; a text without a
    usable vector (a problem, NaN or infinity) becomes an error row of stage ``embed``."""
    n = batch.num_rows
    problems: list[RowProblem | None] = list(result.problems or [None] * len(todo))
    finite = np.isfinite(result.vectors).all(axis=1) if len(todo) else np.zeros(0, bool)
    values = np.zeros((n, dimensions), dtype=np.float32)
    has_vector = np.zeros(n, dtype=bool)
    tokens = np.zeros(n, dtype=np.int32)
    truncated = np.zeros(n, dtype=bool)
    status = batch.column("status").to_pylist()
    stage, reason, message = (batch.column(c).to_pylist() for c in ("stage", "reason", "message"))
    raw = batch.column("raw").to_pylist()
    text_col = batch.column("text").to_pylist()
    for j, i in enumerate(todo):
        problem = problems[j] or (None if finite[j] else RowProblem("bad_vector", "the model returned NaN or infinity"))
        if problem is not None:
            status[i], stage[i], raw[i] = rows.ERROR, "embed", text_col[i]
            reason[i], message[i] = problem.reason, problem.message
            continue
        values[i] = result.vectors[j]
        has_vector[i] = True
        tokens[i] = result.token_counts[j]
        truncated[i] = result.truncated[j]
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), dimensions, mask=pa.array(~has_vector))
    out = batch
    for name, column in (("status", status), ("stage", stage), ("reason", reason), ("message", message), ("raw", raw)):
        out = out.set_column(out.schema.get_field_index(name), name, pa.array(column, pa.string()))
    return (
        out.append_column(pa.field("embedding", pa.list_(pa.float32(), dimensions)), embedding)
        .append_column("tokens", pa.array(tokens))
        .append_column("truncated", pa.array(truncated))
    )
