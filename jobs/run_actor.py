"""The run's one bookkeeping actor: text and id claims, progress and the batches' figures in one
process, because each Ray actor is a process of its own to start. It lives on the driver's node (``on_driver_node``)."""

from __future__ import annotations

import ray

from jobs.batch_ledger import BatchLedger
from jobs.dedupe import Claims
from jobs.progress import ProgressMeter


@ray.remote(num_cpus=0)
class RunActor(Claims, ProgressMeter, BatchLedger):
    def __init__(self) -> None:
        Claims.__init__(self)
        ProgressMeter.__init__(self)
        BatchLedger.__init__(self)
