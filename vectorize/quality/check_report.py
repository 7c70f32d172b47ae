"""The outcome of checking a collection: its figures, the verdict of each limit, its score;
as text, as JSON, and for the report page."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

from vectorize.quality.verdict import Check, NeighbourFigures, score
from vectorize.store.figures import TableFigures

logger = logging.getLogger(__name__)


@dataclass
class CheckReport:
    collection: str
    model: str
    figures: TableFigures
    neighbours: NeighbourFigures | None
    checks: list[Check]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def score(self) -> float:
        return score(self.figures)

    def to_dict(self) -> dict:
        figures = asdict(self.figures)
        edges, counts = figures.pop("norm_histogram")
        return {
            "collection": self.collection,
            "model": self.model,
            "passed": self.passed,
            "score": round(self.score, 2),
            "failed": [c.name for c in self.checks if not c.passed],
            "checks": [asdict(c) for c in self.checks],
            "figures": figures,
            "norm_histogram": {"left_edges": edges, "counts": counts},
            "neighbours": None
            if self.neighbours is None
            else {
                "sampled": self.neighbours.sampled,
                "near_duplicates": self.neighbours.near_duplicates,
                "rate": self.neighbours.rate,
                "similarities": [round(s, 5) for s in self.neighbours.similarities],
            },
        }

    def render(self) -> str:
        lines = [f"collection {self.collection}  ({self.model})", f"rows       {self.figures.rows}"]
        f = self.figures
        lines.append(
            f"norms      mean {f.norm_mean:.4f}, std {f.norm_std:.4f}, min {f.norm_min:.4f}, max {f.norm_max:.4f}"
        )
        if self.neighbours is not None and self.neighbours.sampled:
            sims = self.neighbours.similarities
            lines.append(
                f"neighbours {self.neighbours.sampled} sampled, nearest other text: "
                f"mean {sum(sims) / len(sims):.3f}, min {min(sims):.3f}, max {max(sims):.3f}"
            )
        if f.errors_by_reason:
            lines.append("errors     " + ", ".join(f"{r}: {n}" for r, n in sorted(f.errors_by_reason.items())))
        for c in self.checks:
            limit = "" if c.limit is None else f"limit {c.limit:g}"
            mark = "ok  " if c.passed else "FAIL"
            lines.append(f"{mark} {c.name:<20} {c.value:<10g} {limit:<14} {c.detail}".rstrip())
        lines.append(f"{'passed' if self.passed else 'FAILED'}: score {self.score:.1f}")
        return "\n".join(lines)
