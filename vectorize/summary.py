"""The figures of one run: counted by the sink, printed at the end, kept in the run history."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field, fields


@dataclass
class WriteCounts:
    """What one write task stored; summed over all write tasks for the run."""

    embedded: int = 0
    embedded_new: int = 0  # of the embedded, those the collection did not hold before
    reuse_pending: int = 0
    unchanged: int = 0
    refreshed: int = 0
    failed_by_reason: Counter = field(default_factory=Counter)
    truncated: int = 0
    tokens: int = 0
    sanitized: int = 0  # records stored with text or metadata changed by vectorize.sanitize's rules

    @property
    def rows(self) -> int:
        return (
            self.embedded + self.reuse_pending + self.unchanged + self.refreshed + sum(self.failed_by_reason.values())
        )

    def add(self, other: WriteCounts) -> None:
        self.embedded += other.embedded
        self.embedded_new += other.embedded_new
        self.refreshed += other.refreshed
        self.reuse_pending += other.reuse_pending
        self.unchanged += other.unchanged
        self.failed_by_reason.update(other.failed_by_reason)
        self.truncated += other.truncated
        self.tokens += other.tokens
        self.sanitized += other.sanitized


def live_outcomes(counts: WriteCounts) -> dict[str, int]:
    """What a written block adds to a running job's figures, by outcome (a row waiting to reuse
    a vector counts as reused: the run's end gives it the vector)."""
    return {
        "embedded": counts.embedded,
        "reused": counts.reuse_pending,
        "unchanged": counts.unchanged + counts.refreshed,
        "failed": sum(counts.failed_by_reason.values()),
    }


@dataclass
class RequestStats:
    """Requests to a remote provider, counted by the run's shared budget."""

    requests: int = 0
    retries: int = 0
    throttled: int = 0  # 429 answers
    tokens_billed: int = 0

    def add(self, other: RequestStats) -> None:
        for f in fields(RequestStats):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass
class ApiUsage(RequestStats):
    """A run's requests and what they cost."""

    usd_per_million: float | None = None

    @property
    def cost_usd(self) -> float | None:
        return None if self.usd_per_million is None else self.tokens_billed * self.usd_per_million / 1e6

    def to_dict(self) -> dict:
        data = asdict(self)
        data["cost_usd"] = None if self.cost_usd is None else round(self.cost_usd, 6)
        return data


@dataclass
class BatchApiFigures:
    """A run's use of the Batch API: its submissions, what waits, what it cost and saved."""

    submitted: int = 0  # batches this run submitted
    collected: int = 0  # batches whose answers this run stored (its own, or earlier runs')
    open: int = 0  # batches still at the provider when the run ended
    waiting_rows: int = 0  # rows whose text is in an open batch: a later run stores them
    requests: int = 0
    tokens_billed: int = 0
    usd_per_million: float | None = None  # the batch price
    sync_usd_per_million: float | None = None

    @property
    def cost_usd(self) -> float | None:
        return None if self.usd_per_million is None else self.tokens_billed * self.usd_per_million / 1e6

    @property
    def saved_usd(self) -> float | None:
        if self.usd_per_million is None or self.sync_usd_per_million is None:
            return None
        return self.tokens_billed * (self.sync_usd_per_million - self.usd_per_million) / 1e6

    def to_dict(self) -> dict:
        data = asdict(self)
        for key in ("cost_usd", "saved_usd"):
            value = getattr(self, key)
            data[key] = None if value is None else round(value, 6)
        return data


@dataclass
class BatchMetrics:
    """How the embedding actors' batches went."""

    batches: int = 0
    embedding_batches: int = 0  # batches with something to embed
    texts_embedded: int = 0
    tokens: int = 0
    actors: int = 0  # the most that embedded at one moment
    actors_started: int = 0  # more than ``actors`` where some died and were replaced
    batch_seconds_mean: float = 0.0
    batch_seconds_p95: float = 0.0
    actor_utilisation: float = 0.0  # share of the embedding time the actors spent in the model
    timeline: list[tuple[float, float]] = field(default_factory=list)  # (seconds into the run, texts/s)
    model_started_at: float | None = None  # wall clock (epoch s): the first batch with texts went to the model
    model_ended_at: float | None = None  # the last batch with texts came back from it

    def to_dict(self) -> dict:
        data = asdict(self)
        for key in ("batch_seconds_mean", "batch_seconds_p95", "actor_utilisation"):
            data[key] = round(data[key], 4)
        return data


@dataclass
class RunSummary:
    run_id: str
    collection: str
    source: str
    model: str
    rows_read: int = 0
    embedded: int = 0
    embedded_new: int = 0
    reused: int = 0
    unchanged: int = 0
    refreshed: int = 0
    deleted: int | None = None  # None: not a --sync run
    failed: int = 0
    failed_by_reason: dict[str, int] = field(default_factory=dict)
    truncated: int = 0
    sanitized: int = 0
    tokens: int = 0
    seconds: float = 0.0
    api_usage: ApiUsage | None = None
    batch_metrics: BatchMetrics | None = None
    batch_api: BatchApiFigures | None = None

    @property
    def reuse_hit_rate(self) -> float:
        """Of the rows that got a vector, the share that needed no model call."""
        hits = self.reused + self.unchanged
        return hits / (hits + self.embedded) if hits + self.embedded else 0.0

    @property
    def duplicate_ids(self) -> int:
        """Records whose id an earlier record of the run already had (error rows ``duplicate_id``)."""
        return self.failed_by_reason.get("duplicate_id", 0)

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0

    @property
    def embedded_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        data = asdict(self)
        data["rows_per_second"] = round(self.rows_per_second, 2)
        data["embedded_per_second"] = round(self.embedded_per_second, 2)
        data["seconds"] = round(self.seconds, 3)
        data["api_usage"] = self.api_usage.to_dict() if self.api_usage else None
        data["batch_metrics"] = self.batch_metrics.to_dict() if self.batch_metrics else None
        data["batch_api"] = self.batch_api.to_dict() if self.batch_api else None
        data["reuse_hit_rate"] = round(self.reuse_hit_rate, 4)
        data["duplicate_ids"] = self.duplicate_ids
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def run_metrics(self) -> dict:
        """The figures the run history keeps beside its columns."""
        batches = self.batch_metrics or BatchMetrics()
        usage = self.api_usage
        return {
            **batches.to_dict(),
            "reuse_hit_rate": round(self.reuse_hit_rate, 4),
            "embedded_per_second": round(self.embedded_per_second, 2),
            "api_calls": usage.requests if usage else batches.embedding_batches,
            "retries": usage.retries if usage else 0,
            "sanitized": self.sanitized,
            "duplicate_ids": self.duplicate_ids,
        }

    def render(self) -> str:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(self.failed_by_reason.items()))
        lines = [
            f"collection   {self.collection}  ({self.model})",
            f"rows read    {self.rows_read}",
            f"embedded     {self.embedded}  ({self.embedded_new} new, {self.embedded - self.embedded_new} changed)",
            f"reused       {self.reused}  (same text already stored or repeated in this run)",
            f"unchanged    {self.unchanged}" + (f"  ({self.refreshed} with new metadata)" if self.refreshed else ""),
            *([f"deleted      {self.deleted}  (gone from the source)"] if self.deleted is not None else []),
            f"hit rate     {self.reuse_hit_rate:.1%}  (rows given a vector without the model: reused, unchanged)",
            f"failed       {self.failed}" + (f"  ({reasons})" if reasons else ""),
            *(
                [f"duplicate    {self.duplicate_ids}  (ids read again: error rows naming the record stored)"]
                if self.duplicate_ids
                else []
            ),
            f"truncated    {self.truncated}  (longer than the model's window)",
            *(
                [f"sanitized    {self.sanitized}  (NUL removed or invalid UTF-8 replaced in text or metadata)"]
                if self.sanitized
                else []
            ),
            f"tokens       {self.tokens}",
            f"seconds      {self.seconds:.1f}",
            f"texts/s      {self.rows_per_second:.1f} rows read, {self.embedded_per_second:.1f} embedded",
        ]
        batches = self.batch_metrics
        if batches is not None and batches.embedding_batches:
            lines.append(
                f"batches      {batches.embedding_batches} embedded on {plural(batches.actors, 'actor')}"
                + (f" ({batches.actors_started} started)" if batches.actors_started > batches.actors else "")
                + ": "
                f"mean {batches.batch_seconds_mean:.2f} s, p95 {batches.batch_seconds_p95:.2f} s, "
                f"actors busy {batches.actor_utilisation:.0%}"
            )
        lines += self._batch_api_lines()
        usage = self.api_usage
        if usage is not None:
            cost = "unknown price" if usage.cost_usd is None else f"about {usd(usage.cost_usd)}"
            lines += [
                f"requests     {usage.requests}  ({usage.retries} retries, {usage.throttled} answered 429)",
                f"billed       {usage.tokens_billed} tokens, {cost}",
            ]
        return "\n".join(lines)

    def _batch_api_lines(self) -> list[str]:
        figures = self.batch_api
        if figures is None:
            return []
        lines = [f"batch api    {plural(figures.submitted, 'batch')} submitted, {figures.collected} collected, "
                 f"{figures.open} open"]  # fmt: skip
        if figures.waiting_rows:
            lines.append(f"waiting      {figures.waiting_rows} rows wait for the Batch API: run the same command "
                         "again to collect them")  # fmt: skip
        cost = "unknown price" if figures.cost_usd is None else f"about {usd(figures.cost_usd)} at the batch price"
        saved = f", {usd(figures.saved_usd)} less than synchronous requests" if figures.saved_usd is not None else ""
        requests = plural(figures.requests, "request")
        lines.append(f"billed       {figures.tokens_billed} tokens in {requests}, {cost}{saved}")
        return lines


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}{'es' if noun.endswith('ch') else 's'}"


def usd(amount: float) -> str:
    """Dollars to the cent's hundredth; a smaller amount shown as such, not as $0.0000."""
    return f"${amount:,.4f}" if amount >= 0.00005 or amount == 0 else f"${amount:.1e}"
