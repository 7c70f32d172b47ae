"""The pgvector Datasinks: each write task writes its blocks, each in one transaction, on its
worker process's connection, and counts them; the counts of all tasks add up in the driver."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from ray.data.block import Block
from ray.data.datasource import Datasink
from ray.data.datasource.datasink import WriteResult

from jobs.progress import report_counts
from vectorize.db import reused_connection
from vectorize.store.writer import CollectionWrite, write_block
from vectorize.summary import WriteCounts, live_outcomes

logger = logging.getLogger(__name__)


class CountingDatasink(Datasink[WriteCounts]):
    """Writes a task's blocks on one connection (``write_block``) and sums what they wrote."""

    def __init__(self, dsn: str, meter: Any = None) -> None:
        self.dsn = dsn
        self.totals = WriteCounts()
        self.meter = meter  # the run's bookkeeping actor, told of every block written

    def write_block(self, conn, block: Block) -> WriteCounts:
        raise NotImplementedError

    def write(self, blocks: Iterable[Block], ctx) -> WriteCounts:
        counts = WriteCounts()
        conn = reused_connection(self.dsn, vector=True)
        for block in blocks:
            if block.num_rows:
                written = self.write_block(conn, block)
                counts.add(written)
                report_counts(self.meter, {"rows written": block.num_rows, **live_outcomes(written)})
        return counts

    def on_write_complete(self, write_result: WriteResult[WriteCounts]) -> None:
        for counts in write_result.write_returns:
            self.totals.add(counts)


class PgvectorDatasink(CountingDatasink):
    """Into a collection's table (and its errors and pending tables)."""

    def __init__(self, dsn: str, spec: CollectionWrite, meter: Any = None) -> None:
        super().__init__(dsn, meter)
        self.spec = spec

    def get_name(self) -> str:
        return "Pgvector"

    def write_block(self, conn, block: Block) -> WriteCounts:
        return write_block(conn, self.spec, block)
