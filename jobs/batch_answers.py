"""What a finished batch's files come to, and its vectors stored: each text's vector (or its
problem) written onto the run's first pending row holding it, as the sink writes a block; the
run's end gives the other rows of the same text that vector."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from jobs.vector_rows import attach_vectors
from vectorize import rows
from vectorize.providers.base import EmbeddedBatch, RowProblem
from vectorize.providers.batch_files import read_answers
from vectorize.store import batch_work as work
from vectorize.store.writer import CollectionWrite, write_block
from vectorize.summary import WriteCounts


@dataclass
class BatchOutcome:
    """The covered texts with an answer (a vector, or a problem), and those to send again."""

    answered: list[work.CoveredText] = field(default_factory=list)
    vectors: np.ndarray | None = None  # one a text answered, in its order
    problems: list[RowProblem | None] = field(default_factory=list)
    again: list[tuple[str, bool, str]] = field(default_factory=list)  # (text hash, alone, why)
    tokens_billed: int = 0
    requests: int = 0  # answered and billed

    @property
    def failed(self) -> list[str]:
        return [item.text_sha256 for item, problem in zip(self.answered, self.problems, strict=True) if problem]


def outcome_of(
    covered: list[work.CoveredText], output: bytes | None, errors: bytes | None, dimensions: int, finished_as: str
) -> BatchOutcome:
    requests: dict[str, int] = {}
    for item in covered:
        requests[item.custom_id] = requests.get(item.custom_id, 0) + 1
    answers = read_answers(output, errors, requests, dimensions, finished_as)
    outcome = BatchOutcome(vectors=np.zeros((len(covered), dimensions), np.float32))
    for answer in answers.values():
        outcome.tokens_billed += answer.tokens_billed
        outcome.requests += answer.tokens_billed > 0
    for item in covered:
        answer = answers[item.custom_id]
        if answer.retry is not None:
            outcome.again.append((item.text_sha256, answer.alone, answer.retry))
            continue
        if answer.vectors is not None:
            outcome.vectors[len(outcome.answered)] = answer.vectors[item.position]
        outcome.answered.append(item)
        outcome.problems.append(answer.problems[item.position] if answer.problems else None)
    outcome.vectors = outcome.vectors[: len(outcome.answered)]
    return outcome


def write_answers(
    conn,
    write: CollectionWrite,
    shas: list[str],
    vectors: np.ndarray | None,
    tokens: list[int],
    truncated: list[bool],
    problems: list[RowProblem | None],
) -> WriteCounts:
    """Each text's vector (or its problem) onto the run's first pending row holding it; those
    rows leave the pending table. What the writer wrote."""
    if not shas:
        return WriteCounts()
    dimensions = write.dimensions
    found = work.first_rows(conn, write.collection, write.run_id, shas)
    index = {sha: i for i, sha in enumerate(shas)}
    order = [index[row[3]] for row in found]
    prepared = pa.Table.from_pylist(
        [
            {**rows.embed_row(key, text, sha, metadata, False), "chunk": chunk, "fingerprint": fingerprint,
             "chunks": None}
            for key, chunk, text, sha, metadata, fingerprint in found
        ],
        schema=rows.PREPARED_SCHEMA,
    )  # fmt: skip
    values = vectors[order] if vectors is not None else np.zeros((len(found), dimensions), np.float32)
    result = EmbeddedBatch(values, [tokens[i] for i in order], [truncated[i] for i in order],
                           [problems[i] for i in order])  # fmt: skip
    block = attach_vectors(prepared, np.arange(len(found)), result, dimensions)
    # whether a row is new is what its upsert finds: the pipeline's flag stayed behind with it
    counts = write_block(conn, write, block.drop_columns(["new"]))
    work.drop_pending(conn, write.collection, write.run_id, [(row[0], row[1]) for row in found])
    counts.reuse_pending -= len(found)  # the pipeline counted these rows as waiting for a vector
    return counts
