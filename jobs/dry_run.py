"""``vectorize run ... --dry-run``: what a run would do, and cost, before it does it.

The source is read and prepared as a run prepares it, against what the collection stores (the
same skip rules, text claims and chunking), and the prepared rows are counted instead of
written: rows to embed (new and changed), reused, unchanged, failed with their reasons, and the
tokens of the texts to embed, counted by the model's own tokenizer (tiktoken for OpenAI's
models). Nothing is written: the collection's checks (model, storage) run in a transaction that
is rolled back, and no run is recorded. A remote model OpenAI documents is not asked for a
vector; a local one embeds a small sample of the texts here, to measure its pace.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
from ray.data.block import Block
from ray.data.datasource import Datasink
from ray.data.datasource.datasink import WriteResult

from jobs.plan import RunPlan, plan_run
from jobs.targets import CollectionRun, CollectionTarget
from vectorize import rows
from vectorize.errors import ConfigError
from vectorize.providers.base import ProviderSpec
from vectorize.providers.remote import RequestPolicy
from vectorize.settings import RunSettings
from vectorize.store.collection import Collection
from vectorize.summary import usd

SAMPLE_TEXTS = 64  # texts a local model embeds to measure its pace
MAX_INPUTS = RequestPolicy().max_inputs  # a request's inputs at most: the fewest requests a run sends


@dataclass
class PreviewCounts:
    """What the prepared rows of one write task would have come to."""

    to_embed: int = 0
    new: int = 0
    reused: int = 0
    unchanged: int = 0
    refreshed: int = 0
    failed: Counter = field(default_factory=Counter)
    tokens: int = 0  # as the run counts them: before a cut to the model's window
    billed: int = 0  # as a service bills them: after it
    in_open_batches: int = 0  # texts a Batch API batch submitted earlier will answer: paid already
    sample: list[str] = field(default_factory=list)

    def add(self, other: PreviewCounts) -> None:
        for name in ("to_embed", "new", "reused", "unchanged", "refreshed", "tokens", "billed", "in_open_batches"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.failed.update(other.failed)
        self.sample += other.sample[: SAMPLE_TEXTS - len(self.sample)]


class PreviewSink(Datasink[PreviewCounts]):
    """Counts prepared rows by what a run would do with them; writes nothing. ``batches``: the
    DSN and collection whose open Batch API batches will answer some texts already."""

    def __init__(self, provider: ProviderSpec, batches: tuple[str, Collection] | None = None) -> None:
        self.provider = provider
        self.batches = batches
        self.totals = PreviewCounts()

    def _in_open_batches(self, embed: pa.Table) -> pa.Table:
        """Which of the rows to embed have their text in an open batch: collected, not paid again."""
        from vectorize.db import reused_connection
        from vectorize.store.batch_work import submitted_texts

        dsn, collection = self.batches
        submitted = submitted_texts(reused_connection(dsn), collection, embed.column("text_sha256").to_pylist())
        return pc.is_in(embed.column("text_sha256"), pa.array(sorted(submitted), pa.string()))

    def get_name(self) -> str:
        return "DryRun"

    def write(self, blocks: Iterable[Block], ctx) -> PreviewCounts:
        counts = PreviewCounts()
        counter = None
        for block in blocks:
            if not block.num_rows:
                continue
            status = block.column("status")
            tally = {str(k): int(v.as_py()) for k, v in zip(*pc.value_counts(status).flatten(), strict=True)}
            counts.reused += tally.get(rows.REUSE, 0)
            counts.unchanged += tally.get(rows.UNCHANGED, 0)
            counts.refreshed += tally.get(rows.REFRESH, 0)
            failed = block.filter(pc.equal(status, rows.ERROR))
            counts.failed.update(failed.column("reason").to_pylist())
            embed = block.filter(pc.equal(status, rows.EMBED))
            if embed.num_rows and self.batches is not None:
                submitted = self._in_open_batches(embed)
                counts.in_open_batches += int(pc.sum(pc.cast(submitted, pa.int64())).as_py() or 0)
                embed = embed.filter(pc.invert(submitted))
            if embed.num_rows:
                counter = counter or self.provider.token_spans()
                texts = embed.column("text").to_pylist()
                counts.to_embed += embed.num_rows
                counts.new += int(pc.sum(pc.cast(pc.fill_null(embed.column("new"), False), pa.int64())).as_py() or 0)
                tokens = counter.count(texts)
                counts.tokens += sum(tokens)
                counts.billed += sum(min(count, self.provider.identity.max_tokens) for count in tokens)
                counts.sample += texts[: SAMPLE_TEXTS - len(counts.sample)]
        return counts

    def on_write_complete(self, write_result: WriteResult[PreviewCounts]) -> None:
        for counts in write_result.write_returns:
            self.totals.add(counts)


@dataclass
class DryRunReport:
    collection: str
    source: str
    model: str
    exists: bool  # the collection is there already
    remote: bool  # a service's model, billed by the token
    rows_read: int = 0
    to_embed: int = 0
    new: int = 0
    changed: int = 0
    reused: int = 0
    unchanged: int = 0
    failed: int = 0
    failed_by_reason: dict[str, int] = field(default_factory=dict)
    in_open_batches: int = 0  # rows whose text an open Batch API batch will answer: not paid again
    tokens: int = 0
    tokens_billed: int = 0  # a service's: each text's tokens up to the model's window
    cost_usd: float | None = None  # synchronous requests
    batch_cost_usd: float | None = None  # through the Batch API
    seconds_estimate: float | None = None
    estimate_basis: str = ""
    seconds: float = 0.0

    def to_json(self) -> str:
        data = asdict(self)
        for key, digits in (("cost_usd", 6), ("batch_cost_usd", 6), ("seconds_estimate", 1), ("seconds", 3)):
            data[key] = None if data[key] is None else round(data[key], digits)
        return json.dumps({"dry_run": True, **data}, sort_keys=True)

    def render(self) -> str:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(self.failed_by_reason.items()))
        cost = "unknown price (--price-per-million)" if self.cost_usd is None else f"about {usd(self.cost_usd)}"
        batch = "" if self.batch_cost_usd is None else f", about {usd(self.batch_cost_usd)} through --batch-api"
        when = "unknown" if self.seconds_estimate is None else _duration(self.seconds_estimate)
        lines = [
            "dry run      nothing was written or embedded",
            f"collection   {self.collection}  ({self.model}){'' if self.exists else ', new'}",
            f"rows read    {self.rows_read}",
            f"to embed     {self.to_embed}  ({self.new} new, {self.changed} changed)",
            *(
                [f"in batches   {self.in_open_batches}  (submitted earlier: this run collects them, paid already)"]
                if self.in_open_batches
                else []
            ),
            f"reused       {self.reused}  (same text already stored or repeated in this run)",
            f"unchanged    {self.unchanged}",
            f"failed       {self.failed}" + (f"  ({reasons})" if reasons else ""),
            f"tokens       {self.tokens}",
            f"cost         {cost}{batch}" if self.remote else "cost         none: a local model",
            f"time         {when}  ({self.estimate_basis})",
        ]
        return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"about {seconds:.0f} s"
    if seconds < 5400:
        return f"about {seconds / 60:.0f} min"
    return f"about {seconds / 3600:.1f} h"


def dry_run_here(settings: RunSettings) -> DryRunReport:
    started = time.perf_counter()
    plan = plan_run(settings)
    target = plan.target
    if not isinstance(target, CollectionTarget):
        raise ConfigError("--dry-run previews a run into a collection: drop --dest column")
    report = _preview(plan, target)
    report.seconds = time.perf_counter() - started
    return report


def _preview(plan: RunPlan, target: CollectionTarget) -> DryRunReport:
    inputs, run = plan.inputs, target.preview(plan.inputs)
    totals = _prepared_counts(plan, run) if run.needs_pipeline else PreviewCounts()
    failed = dict(totals.failed + run.skipped_failures)
    remote = plan.settings.embedding.remote is not None
    report = DryRunReport(target.name, run.source.display, inputs.identity.key, run.exists, remote)
    report.rows_read = totals.to_embed + totals.reused + totals.unchanged + totals.refreshed + sum(failed.values())
    report.rows_read += run.skipped
    report.to_embed, report.new, report.changed = totals.to_embed, totals.new, totals.to_embed - totals.new
    report.reused, report.unchanged = totals.reused, totals.unchanged + totals.refreshed + run.skipped
    report.failed, report.failed_by_reason, report.tokens = sum(failed.values()), failed, totals.tokens
    report.tokens_billed, report.in_open_batches = totals.billed, totals.in_open_batches
    _estimate(report, plan, totals.sample)
    return report


def _prepared_counts(plan: RunPlan, run: CollectionRun) -> PreviewCounts:
    """The source read and prepared on Ray as the run would, its rows counted."""
    import ray

    from jobs.pipeline import LIGHT_STAGE_CPUS, prepared_rows
    from jobs.run_actor import RunActor
    from vectorize.ray_runtime import ensure_ray, on_driver_node

    runtime, target = plan.settings.runtime, run.target
    ensure_ray(runtime.ray_address, progress=runtime.progress, worker_logs=runtime.worker_logs)
    claims = RunActor.options(**on_driver_node()).remote()
    try:
        batches = (target.dsn, target.collection) if run.exists and run.inputs.deferred else None
        sink = PreviewSink(plan.provider, batches)
        prepared_rows(run.source, plan.settings, run.preparation(claims)).write_datasink(
            sink, ray_remote_args={"num_cpus": LIGHT_STAGE_CPUS}, concurrency=runtime.writers
        )
        return sink.totals
    finally:
        ray.kill(claims)


def _estimate(report: DryRunReport, plan: RunPlan, sample: list[str]) -> None:
    """Cost and time: remote at the price and the rate limits, local at a pace measured here."""
    remote = plan.settings.embedding.remote
    if remote is not None:
        price = remote.usd_per_million()
        if price is not None:
            report.cost_usd = report.tokens_billed * price / 1e6
            report.batch_cost_usd = report.tokens_billed * remote.batch_usd_per_million() / 1e6
        limits = remote.rate_limits
        if remote.batch is not None:
            report.estimate_basis = "the Batch API answers within its 24-hour window"
        elif limits.tpm or limits.rpm:
            minutes = max(report.tokens_billed / limits.tpm if limits.tpm else 0.0,
                          math.ceil(report.to_embed / MAX_INPUTS) / limits.rpm if limits.rpm else 0.0)  # fmt: skip
            report.seconds_estimate = 60.0 * minutes
            report.estimate_basis = f"at the rate limits: {limits.tpm or 'any'} TPM, {limits.rpm or 'any'} RPM"
        else:
            report.estimate_basis = "no rate limit known: give --tpm, --rpm or --rate-tier"
        return
    if not report.to_embed:
        report.seconds_estimate, report.estimate_basis = 0.0, "nothing to embed"
        return
    from vectorize.providers.base import embed_blocking

    provider = plan.provider.open(os.cpu_count() or 1)
    embed_blocking(provider, sample[:8])  # the first call's warm-up is not the pace
    started = time.perf_counter()
    embed_blocking(provider, sample)
    rate = len(sample) / max(time.perf_counter() - started, 1e-6)
    report.seconds_estimate = report.to_embed / rate
    report.estimate_basis = (f"measured here: {rate:.0f} texts/s on {len(sample)} of the texts, in one process; "
                             "the run's start (Ray, the actors) comes on top")  # fmt: skip
