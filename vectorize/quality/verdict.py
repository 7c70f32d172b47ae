"""The limits a collection is held to, the verdict of each, and one quality score.

The score is the share of the collection's source rows (stored, plus those without a vector)
that are stored with a sound vector, as a percentage: a stored row counts against it once for
each problem it has (zero, not finite, wrong dimensions, another model's, a norm off the
model's normal, a vector shared with a different text), so it errs low, never high.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vectorize.store.figures import TableFigures

DEFAULT_NEAR_DUPLICATE_SIMILARITY = 0.98


@dataclass(frozen=True)
class Limits:
    max_zero: int = 0
    max_non_finite: int = 0
    max_wrong_dims: int = 0
    max_other_model: int = 0
    max_off_norm: int = 0
    max_duplicate_vectors: int = 0  # rows sharing one vector with a different text
    max_identical_texts: int | None = None  # rows whose text is stored under another id too
    max_near_duplicate_rate: float = 0.2
    min_coverage: float = 0.99
    min_score: float = 90.0
    near_duplicate_similarity: float = DEFAULT_NEAR_DUPLICATE_SIMILARITY


@dataclass(frozen=True)
class Check:
    name: str
    value: float
    limit: float | None
    passed: bool
    detail: str = ""


@dataclass
class NeighbourFigures:
    sampled: int
    near_duplicates: int
    similarities: list[float]

    @property
    def rate(self) -> float:
        return self.near_duplicates / self.sampled if self.sampled else 0.0


def neighbour_figures(similarities: np.ndarray, threshold: float) -> NeighbourFigures:
    return NeighbourFigures(len(similarities), int(np.sum(similarities >= threshold)), similarities.tolist())


def coverage(figures: TableFigures) -> float:
    total = figures.rows + figures.missing
    return figures.rows / total if total else 1.0


def score(figures: TableFigures) -> float:
    problems = (
        figures.zero
        + figures.non_finite
        + figures.wrong_dims
        + figures.other_model
        + figures.off_norm
        + figures.duplicate_vector_rows
    )
    total = figures.rows + figures.missing
    return 100.0 * max(0, figures.rows - problems) / total if total else 100.0


def at_most(name: str, value: float, limit: float | None, detail: str = "") -> Check:
    return Check(name, value, limit, limit is None or value <= limit, detail)


def at_least(name: str, value: float, limit: float, detail: str = "") -> Check:
    return Check(name, value, limit, value >= limit, detail)


def verdicts(figures: TableFigures, neighbours: NeighbourFigures | None, limits: Limits) -> list[Check]:
    low, high = figures.norm_range
    models = ", ".join(f"{key}: {n}" for key, n in sorted(figures.models.items()))
    missing = ", ".join(f"{reason}: {n}" for reason, n in sorted(figures.missing_by_reason.items()))
    checks = [
        at_most("wrong_dimensions", figures.wrong_dims, limits.max_wrong_dims, f"column {figures.column_type}"),
        at_most("zero_vectors", figures.zero, limits.max_zero),
        at_most("non_finite_vectors", figures.non_finite, limits.max_non_finite, "NaN or infinity"),
        at_most("off_norm", figures.off_norm, limits.max_off_norm, f"norm outside {low:.4g}..{high:.4g}"),
        at_most(
            "duplicate_vectors",
            figures.duplicate_vector_rows,
            limits.max_duplicate_vectors,
            f"rows in {figures.duplicate_vector_groups} groups sharing one vector across different texts",
        ),
        at_most(
            "identical_texts",
            figures.identical_text_rows,
            limits.max_identical_texts,
            f"ids in {figures.identical_text_groups} groups holding one text",
        ),
        at_most("other_model", figures.other_model, limits.max_other_model, models),
        at_least("coverage", round(coverage(figures), 6), limits.min_coverage, f"without a vector: {missing or 0}"),
    ]
    if neighbours is not None:
        checks.append(
            at_most(
                "near_duplicate_rate",
                round(neighbours.rate, 6),
                limits.max_near_duplicate_rate,
                f"{neighbours.near_duplicates} of {neighbours.sampled} sampled rows have a different text "
                f"at similarity >= {limits.near_duplicate_similarity:g}",
            )
        )
    checks.append(at_least("score", round(score(figures), 2), limits.min_score))
    return checks
