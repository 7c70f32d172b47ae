"""A run's figures: in its summary and run history, live while it goes, one structured event
per batch in the actors' logs, and Ray's Prometheus endpoint."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from jobs.batch_events import EVENT
from jobs.live_figures import LiveFigures
from tests.corpus import commit_rows, write_jsonl
from tests.helpers import query, run

pytestmark = pytest.mark.usefixtures("ray_cluster")


def batch_events(run_id: str) -> list[dict]:
    import ray

    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    found = []
    for path in logs.glob("worker-*.err"):
        for line in path.read_text(errors="replace").splitlines():
            if EVENT in line and run_id in line:
                found.append(json.loads(line[line.index("{") :]))
    return found


def prometheus_values(name: str, collection: str) -> dict[str, float]:
    """Series of metric ``name`` for ``collection`` at this node's Ray metrics endpoint, summed
    over the processes that report them, keyed by their other vectorize tag (or "")."""
    import ray

    port = next(n["MetricsExportPort"] for n in ray.nodes() if n["Alive"])
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    values: dict[str, float] = {}
    for labels, value in re.findall(rf"^{name}{{(.*)}} (\S+)$", text, re.M):
        if f'collection="{collection}"' not in labels:
            continue
        other = re.search(r'(outcome|status)="([^"]*)"', labels)
        key = other.group(2) if other else ""
        values[key] = values.get(key, 0.0) + float(value)
    return values


def test_a_run_reports_its_batches_everywhere(tmp_path, tiny_model, pg_dsn, table_name, monkeypatch):
    rows = commit_rows(120)
    rows[7]["text"] = rows[3]["text"]  # one reused
    rows[9]["text"] = "   "  # one failed
    source = write_jsonl(tmp_path / "c.jsonl", rows)
    monkeypatch.setattr(LiveFigures, "INTERVAL_S", 0.5)
    live: list[dict] = []
    result: dict = {}

    def job() -> None:
        result["summary"] = run(source, table_name, tiny_model, pg_dsn, text="{text}", batch_size=8)

    worker = threading.Thread(target=job)
    worker.start()
    while worker.is_alive():
        time.sleep(0.2)
        try:
            found = query(pg_dsn, "SELECT metrics FROM vectorize_runs WHERE collection = %s", table_name)
        except Exception:  # the run history may not exist before the first run of the suite
            continue
        if found and found[0][0] and found[0][0].get("live"):
            live.append(found[0][0])
    worker.join()
    summary = result["summary"]
    assert (summary.rows_read, summary.failed) == (120, 1) and summary.reused >= 1
    # the history was updated while the run went (rows are written in the run's last seconds,
    # after the actor has loaded its model, so early snapshots may count none yet)
    assert len({snapshot["seconds"] for snapshot in live}) >= 2, "no live figures while the run went"
    for snapshot in live:
        parts = sum(snapshot[k] for k in ("embedded", "reused", "unchanged", "failed"))
        assert parts == snapshot["rows_written"] <= 120, snapshot

    batches = summary.batch_metrics
    assert batches.texts_embedded == summary.embedded and batches.actors == 1
    assert batches.embedding_batches >= 120 // 8 - 2
    assert 0 < batches.batch_seconds_mean <= batches.batch_seconds_p95
    assert 0 < batches.actor_utilisation <= 1
    assert sum(rate for _, rate in batches.timeline) > 0
    history = query(pg_dsn, "SELECT metrics FROM vectorize_runs WHERE run_id = %s", summary.run_id)[0][0]
    assert "live" not in history and history["texts_embedded"] == summary.embedded
    assert history["api_calls"] == batches.embedding_batches
    assert (
        history["reuse_hit_rate"] == pytest.approx(summary.reuse_hit_rate, abs=1e-4) and history["reuse_hit_rate"] > 0
    )

    events = batch_events(summary.run_id)
    assert len(events) == batches.batches
    assert sum(e["embedded"] for e in events) == summary.embedded
    assert sum(e["rows"] for e in events) == 120  # every row passes the embedding stage, failed or not
    assert all(e["collection"] == table_name and e["seconds"] >= 0 for e in events)

    wanted = {"read": 120, "embedded": summary.embedded, "reused": summary.reused, "failed": 1}
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:  # Ray exports every few seconds
        rows_total = prometheus_values("ray_vectorize_run_rows_total", table_name)
        embedded = prometheus_values("ray_vectorize_texts_embedded_total", table_name)
        runs = prometheus_values("ray_vectorize_runs_total", table_name)
        if {k: rows_total.get(k) for k in wanted} == wanted and embedded and runs:
            break
        time.sleep(2)
    assert {k: rows_total.get(k) for k in wanted} == wanted
    assert embedded == {"": summary.embedded}
    assert runs == {"succeeded": 1}
    assert prometheus_values("ray_vectorize_batches_total", table_name) == {"": batches.batches}
