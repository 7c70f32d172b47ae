"""``vectorize report``: one self-contained HTML page of a collection, its charts drawn by
Plotly (its script is inlined once, so the page opens with no network), and the check results.

The page marks itself as it renders: ``data-charts-rendered`` on ``<body>`` counts the charts
Plotly finished, and ``data-script-errors`` holds any script error, so a headless browser (or
a person with the inspector open) can tell a page that drew from one that did not.
"""

from __future__ import annotations

import html
import logging
from datetime import UTC, datetime

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from vectorize.quality.check_report import CheckReport

logger = logging.getLogger(__name__)

_MARK_RENDERED = "document.body.dataset.chartsRendered = String(Number(document.body.dataset.chartsRendered || 0) + 1);"
_CATCH_ERRORS = """<script>
window.addEventListener("error", function (e) {
  var seen = document.body.dataset.scriptErrors ? document.body.dataset.scriptErrors + " | " : "";
  document.body.dataset.scriptErrors = seen + (e.message || "error");
});
</script>"""
_STYLE = """<style>
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; } td, th { border: 1px solid #ccc; padding: .3rem .6rem; }
.fail { background: #fde2e1; } .ok { background: #e3f6e5; } .chart { margin: 1.5rem 0; }
.none { color: #777; font-style: italic; }
</style>"""


def _layout(figure: go.Figure, title: str, x: str, y: str) -> go.Figure:
    figure.update_layout(title=title, xaxis_title=x, yaxis_title=y, height=360, margin={"t": 50, "b": 50})
    return figure


def throughput_chart(runs: list[dict]) -> go.Figure | None:
    """Texts embedded per second over the latest run that has a timeline."""
    for run in reversed(runs):
        timeline = (run.get("metrics") or {}).get("timeline") or []
        if timeline:
            seconds, rates = zip(*timeline, strict=True)
            figure = go.Figure(go.Scatter(x=list(seconds), y=list(rates), mode="lines+markers", name="texts/s"))
            started = run["started_at"].strftime("%Y-%m-%d %H:%M")
            return _layout(figure, f"Throughput over the run of {started}", "seconds into the run", "texts/s")
    return None


def norms_chart(report: CheckReport) -> go.Figure:
    edges, counts = report.figures.norm_histogram
    width = edges[1] - edges[0] if len(edges) > 1 else 1.0
    figure = go.Figure(go.Bar(x=[e + width / 2 for e in edges], y=counts, width=width, name="vectors"))
    return _layout(figure, "Norms of the stored vectors", "norm", "vectors")


def neighbours_chart(report: CheckReport) -> go.Figure | None:
    if report.neighbours is None or not report.neighbours.similarities:
        return None
    figure = go.Figure(go.Histogram(x=report.neighbours.similarities, nbinsx=40, name="rows"))
    title = f"Similarity of each sampled row's nearest other text ({report.neighbours.sampled} rows)"
    return _layout(figure, title, "cosine similarity", "rows")


def errors_chart(report: CheckReport) -> go.Figure | None:
    errors = report.figures.errors_by_reason
    if not errors:
        return None
    reasons = sorted(errors, key=errors.get, reverse=True)
    figure = go.Figure(go.Bar(x=reasons, y=[errors[r] for r in reasons], name="rows"))
    return _layout(figure, "Rows in the errors table, by reason", "reason", "rows")


def runs_chart(runs: list[dict]) -> go.Figure | None:
    if not runs:
        return None
    when = [run["started_at"] for run in runs]
    figure = go.Figure()
    for key, label in (
        ("embedded", "embedded"),
        ("reused", "reused"),
        ("unchanged", "unchanged"),
        ("failed", "failed"),
    ):
        figure.add_trace(go.Bar(x=when, y=[run.get(key) or 0 for run in runs], name=label))
    figure.update_layout(barmode="stack")
    return _layout(figure, "Runs over time", "started", "rows")


def render_page(report: CheckReport, runs: list[dict]) -> str:
    charts = [
        ("throughput", throughput_chart(runs), "No run of this collection has a throughput timeline yet."),
        ("norms", norms_chart(report), ""),
        ("neighbours", neighbours_chart(report), "No nearest neighbours were sampled (--sample 0)."),
        ("errors", errors_chart(report), "The errors table is empty."),
        ("runs", runs_chart(runs), "The run history holds no run of this collection."),
    ]
    parts = []
    for name, figure, absent in charts:
        if figure is None:
            parts.append(f'<p class="none" id="{name}-absent">{html.escape(absent)}</p>')
            continue
        div = pio.to_html(
            figure,
            full_html=False,
            include_plotlyjs=False,
            div_id=f"chart-{name}",
            post_script=_MARK_RENDERED,
            config={"displaylogo": False, "responsive": True},
        )
        parts.append(f'<div class="chart">{div}</div>')
    made = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    title = f"vectorize report: {report.collection}"
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{html.escape(title)}</title>",
            _STYLE,
            f"<script>{get_plotlyjs()}</script>",
            "</head><body>",
            _CATCH_ERRORS,
            f"<h1>{html.escape(title)}</h1>",
            f"<p>{html.escape(report.model)} &middot; {report.figures.rows} vectors &middot; made {made}</p>",
            _checks_table(report),
            _runs_table(runs),
            *parts,
            f'<script>document.body.dataset.chartsExpected = "{sum(f is not None for _, f, _ in charts)}";</script>',
            "</body></html>",
        ]
    )


def _checks_table(report: CheckReport) -> str:
    verdict = "passed" if report.passed else "FAILED"
    rows = [
        f"<h2>Checks: {verdict}, score {report.score:.1f}</h2>",
        '<table id="checks"><tr><th>check</th><th>value</th><th>limit</th><th></th><th>detail</th></tr>',
    ]
    for check in report.checks:
        limit = "" if check.limit is None else f"{check.limit:g}"
        mark = "ok" if check.passed else "fail"
        rows.append(
            f'<tr class="{mark}"><td>{html.escape(check.name)}</td><td>{check.value:g}</td><td>{limit}</td>'
            f"<td>{mark.upper() if mark == 'fail' else mark}</td><td>{html.escape(check.detail)}</td></tr>"
        )
    rows.append("</table>")
    return "\n".join(rows)


def _runs_table(runs: list[dict]) -> str:
    if not runs:
        return ""
    rows = [
        "<h2>Latest runs</h2>",
        '<table id="runs"><tr><th>started</th><th>status</th><th>read</th><th>embedded</th><th>reused</th>'
        "<th>failed</th><th>seconds</th><th>texts/s</th><th>batch p95 s</th><th>actors busy</th></tr>",
    ]
    for run in runs[-10:]:
        metrics = run.get("metrics") or {}
        busy = metrics.get("actor_utilisation")
        cells = [
            run["started_at"].strftime("%Y-%m-%d %H:%M:%S"),
            run["status"],
            run.get("rows_read"),
            run.get("embedded"),
            run.get("reused"),
            run.get("failed"),
            f"{run['seconds']:.1f}" if run.get("seconds") is not None else "",
            f"{metrics['embedded_per_second']:.1f}" if metrics.get("embedded_per_second") is not None else "",
            f"{metrics['batch_seconds_p95']:.2f}" if metrics.get("batch_seconds_p95") is not None else "",
            f"{busy:.0%}" if busy is not None else "",
        ]
        rows.append(
            "<tr>" + "".join(f"<td>{html.escape(str(c if c is not None else ''))}</td>" for c in cells) + "</tr>"
        )
    rows.append("</table>")
    return "\n".join(rows)
