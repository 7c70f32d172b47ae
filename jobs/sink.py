"""The pgvector Datasink: each write task writes its blocks in one transaction and counts them."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from ray.data.block import Block
from ray.data.datasource import Datasink
from ray.data.datasource.datasink import WriteResult

from vectorize.db import connect
from vectorize.store.collection import Collection
from vectorize.store.writer import write_block
from vectorize.summary import WriteCounts

logger = logging.getLogger(__name__)


class PgvectorDatasink(Datasink[WriteCounts]):
    def __init__(
        self,
        dsn: str,
        collection: Collection,
        dimensions: int,
        model_key: str,
        run_id: str,
        *,
        sync: bool = False,
        fail_first_write_marker: str | None = None,
    ) -> None:
        self.dsn = dsn
        self.collection = collection
        self.dimensions = dimensions
        self.model_key = model_key
        self.run_id = run_id
        self.sync = sync
        self.fail_first_write_marker = fail_first_write_marker
        self.totals = WriteCounts()

    def get_name(self) -> str:
        return "Pgvector"

    def write(self, blocks: Iterable[Block], ctx) -> WriteCounts:
        counts = WriteCounts()
        with connect(self.dsn) as conn:
            for block in blocks:
                if block.num_rows:
                    counts.add(
                        write_block(
                            conn, self.collection, self.dimensions, self.model_key, self.run_id, block, self.sync
                        )
                    )
        self._maybe_die_once()
        return counts

    def _maybe_die_once(self) -> None:
        """Test hook: kill this worker after its rows are committed, once, so Ray retries the task."""
        marker = self.fail_first_write_marker
        if not marker:
            return
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        logger.warning("test hook: write task dies after commit (%s)", Path(marker).name)
        os._exit(1)

    def on_write_complete(self, write_result: WriteResult[WriteCounts]) -> None:
        for counts in write_result.write_returns:
            self.totals.add(counts)
