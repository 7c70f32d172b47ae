"""The run's batch figures stay true when actors die and are replaced."""

from __future__ import annotations

from jobs.batch_events import BatchFigures
from jobs.batch_ledger import summarise


def test_replaced_actors_count_once_at_a_time_and_stay_busy():
    batches = []
    for n, actor in enumerate(["a", "b", "c"]):  # one actor at a time: each replaced the one before
        for i in range(4):
            ended = 100.0 + n * 10 + (i + 1) * 2
            batches.append(BatchFigures(rows=8, embedded=8, tokens=80, seconds=2.0, ended=ended, actor=actor))
    metrics = summarise(batches, opened=100.0, now=140.0)
    assert (metrics.actors, metrics.actors_started) == (1, 3)
    assert metrics.actor_utilisation == 1.0  # each was in the model all its life


def test_two_actors_side_by_side_are_two():
    batches = [
        BatchFigures(rows=8, embedded=8, tokens=80, seconds=1.0, ended=101.0 + i, actor=actor)
        for i in range(3)
        for actor in ("a", "b")
    ]
    metrics = summarise(batches, opened=100.0, now=104.0)
    assert (metrics.actors, metrics.actors_started) == (2, 2)
