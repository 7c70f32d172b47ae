"""``--batch-api``: the run's texts to embed, which the pipeline left in the pending table, go to
OpenAI's Batch API; the batches are polled and their answers stored through the sink's writer.

Each submission is recorded before its file is uploaded, its file and batch ids as soon as they
exist, and the batch's metadata names the submission: a run that dies anywhere in between is
followed by one that finds the batch and collects it instead of paying for it again. A batch
that expired, failed or was cancelled has the texts it did not answer sent again, in a later
batch; a request the Batch API refused as a whole has each of its texts sent alone. Once the
organisation's enqueued-token limit shows (a batch failed with ``token_limit_exceeded``), no
more is queued than it holds: the rest waits for the open batches to finish.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
import uuid
from dataclasses import dataclass

from jobs.batch_answers import outcome_of, write_answers
from vectorize.errors import ProviderError, ProviderStopError, VectorizeError
from vectorize.providers.api import RemoteSpec, client_spec, request_model, token_counter
from vectorize.providers.batch_client import BatchClient, BatchGone, BatchStatus
from vectorize.providers.batch_files import BatchInput, RequestFile, inputs_as_sent, request_files, request_line
from vectorize.store import batch_work as work
from vectorize.store.writer import CollectionWrite
from vectorize.summary import BatchApiFigures, WriteCounts, plural

logger = logging.getLogger(__name__)

ENQUEUED_LIMIT = re.compile(r"Limit:\s*([\d,]+)")
FIRST_LOOK_S = 1.0  # seconds before the first look at the batches; each next look waits twice as long
SINCE_SLACK_S = 3600.0  # a batch made for a submission is looked for among those created since an hour before it


class BatchesLeftRunning(VectorizeError):
    """The run stopped while batches it submitted go on at the provider."""

    exit_code = 130


def embeddings_url(provider: str) -> str:
    return "/embeddings" if provider == "azure" else "/v1/embeddings"


@dataclass
class _Progress:
    """What the progress line says besides the run's figures."""

    in_progress: int = 0  # batches the provider is working on
    texts_done: int = 0
    texts_open: int = 0  # in open batches
    shown_at: float = 0.0


class BatchBackfill:
    """The Batch API phase of one run over one collection's pending rows."""

    def __init__(self, conn, write: CollectionWrite, spec: RemoteSpec, *, progress: bool) -> None:
        settings = spec.settings
        assert settings.batch is not None, "a Batch API run has batch settings"
        self.conn = conn
        self.write = write
        self.collection = write.collection
        self.settings = settings
        self.options = settings.batch
        self.client = BatchClient(client_spec(settings), request_model(settings), embeddings_url(settings.provider))
        self.counter = token_counter(settings)
        self.dimensions = write.dimensions
        self.progress = progress
        self.enqueued_limit: int | None = None
        self.counts = WriteCounts()
        self.figures = BatchApiFigures(usd_per_million=settings.batch_usd_per_million(),
                                       sync_usd_per_million=settings.usd_per_million())  # fmt: skip
        self.progress_line = _Progress()

    async def run(self) -> BatchApiFigures:
        try:
            return await self._run()
        except (KeyboardInterrupt, asyncio.CancelledError):
            if self.options.cancel:
                raise
            raise BatchesLeftRunning(
                f"interrupted: {plural(self.figures.open, 'batch')} go on at the provider; run the same command "
                "again to collect them (or add --cancel to cancel them)"
            ) from None
        finally:
            await self.client.close()

    async def _run(self) -> BatchApiFigures:
        conn, collection = self.conn, self.collection
        work.forget_unneeded(conn, collection, self.write.run_id)
        if self.options.cancel:
            await self._cancel_open()
        looks = 0
        while True:
            await self._poll()
            more = await self._submit() if not self.options.cancel else False
            open_now = work.open_submissions(conn, collection)
            self.figures.open = len(open_now)
            self.progress_line.texts_open = sum(s.inputs for s in open_now)
            if (not open_now and not more) or not self.options.wait:
                break
            self._show()
            # the first looks come sooner: a small batch is often done in seconds
            await asyncio.sleep(min(self.options.poll_interval_s, FIRST_LOOK_S * 2**looks))
            looks += 1
        # texts not submitted (--no-wait on a full queue, --cancel) wait like those sent again
        work.hold_unsubmitted(conn, collection, self.write.model_key, self.write.run_id)
        self.figures.waiting_rows = work.waiting_rows(conn, collection, self.write.run_id)
        return self.figures

    def _show(self) -> None:
        now, line = time.monotonic(), self.progress_line
        if self.progress and now - line.shown_at >= min(30.0, self.options.poll_interval_s):
            line.shown_at = now
            print(f"vectorize: batches {self.figures.open} open ({line.in_progress} in progress), "
                  f"{self.figures.collected} collected; texts {line.texts_done} embedded, {line.texts_open} in open "
                  "batches", file=sys.stderr, flush=True)  # fmt: skip

    # submitting

    async def _submit(self) -> bool:
        """Submit what waits, within the enqueued-token limit; whether some still waits after."""
        conn, collection = self.conn, self.collection
        while True:
            waiting = work.texts_to_submit(conn, collection, self.write.model_key, self.write.run_id)
            if not waiting:
                return False
            inputs = self._inputs(waiting)
            files = request_files(inputs, self.client.model, self.settings.dimensions, self.client.url,
                                  file_tokens=self.enqueued_limit)  # fmt: skip
            for request_file in files:
                if self.enqueued_limit is not None:
                    enqueued = sum(s.tokens for s in work.open_submissions(conn, collection))
                    if enqueued > 0 and enqueued + request_file.tokens > self.enqueued_limit:
                        return True  # the rest waits for open batches to finish
                batch = await self._send(request_file)
                if batch is not None and batch.status == "failed":
                    return True  # refused at once (a queue limit, say): the next look learns why

    def _inputs(self, waiting: list[work.WaitingText]) -> list[BatchInput]:
        """The texts as sent; those a batch will not send become error rows now."""
        inputs, refused = inputs_as_sent(
            [(w.text_sha256, w.text, w.attempts, w.alone, w.last_error) for w in waiting], self.counter,
            self.settings.max_input_tokens, self.settings.long_text, self.options.max_attempts,
        )  # fmt: skip
        if refused:
            shas = [sha for sha, _ in refused]
            with self.conn.transaction():
                self.counts.add(write_answers(self.conn, self.write, shas, None, [0] * len(shas), [False] * len(shas),
                                              [problem for _, problem in refused]))  # fmt: skip
                work.mark_failed(self.conn, self.collection, shas)
        return inputs

    async def _send(self, request_file: RequestFile) -> BatchStatus | None:
        key = f"vz-{uuid.uuid4().hex[:20]}"
        covered = [(cid, pos, item.text_sha256, item.tokens, item.truncated) for cid, pos, item in request_file.inputs]
        work.record_submission(self.conn, self.collection, key, covered, request_file.tokens, request_file.requests)
        self.figures.submitted += 1
        return await self._create(key, bytes(request_file.content), None, time.time() - SINCE_SLACK_S)

    async def _create(self, key: str, content: bytes | None, file_id: str | None, since: float) -> BatchStatus | None:
        """The submission's batch, from ``file_id`` where it was uploaded already (else
        ``content`` is); None where the Batch API refused to make it: its texts wait to be sent
        again, one attempt more, and a refused file counts as a failed batch."""
        try:
            if file_id is None:
                assert content is not None, "a submission without a file has its content"
                file_id = await self.client.upload(content, f"{self.collection.name}-{key}.jsonl")
                work.note_file(self.conn, self.collection, key, file_id)
            metadata = {"vectorize_key": key, "vectorize_collection": self.collection.name}
            batch = await self.client.create(file_id, key, since, metadata)
        except ProviderStopError:
            raise
        except ProviderError as exc:
            self._fail(key, str(exc), count_attempt=True)
            return None
        work.note_batch(self.conn, self.collection, key, batch.id, batch.status)
        logger.info("submitted %s as batch %s (%s)", key, batch.id, batch.status)
        return batch

    def _fail(self, key: str, reason: str, *, count_attempt: bool) -> None:
        """A submission closed without answers: its texts wait for a later batch."""
        covered = work.covered_texts(self.conn, self.collection, key)
        with self.conn.transaction():
            work.send_again(self.conn, self.collection, [c.text_sha256 for c in covered], [False] * len(covered),
                            [reason] * len(covered), count_attempt=count_attempt)  # fmt: skip
            work.close_submission(self.conn, self.collection, key, "failed", 0, reason)
        logger.info("%s", reason)

    # polling and collecting

    async def _poll(self) -> None:
        self.progress_line.in_progress = 0
        for submission in work.open_submissions(self.conn, self.collection):
            try:
                status = await self._status(submission)
                if status is not None and status.finished:
                    await self._collect(submission, status)
            except BatchGone as exc:  # its batch or its output is gone at the provider: sent again
                self._fail(submission.key, str(exc), count_attempt=True)
                self.figures.collected += 1
                continue
            if status is not None and not status.finished:
                work.note_batch(self.conn, self.collection, submission.key, status.id, status.status)
                self.progress_line.in_progress += status.status == "in_progress"

    async def _status(self, submission: work.Submission) -> BatchStatus | None:
        """The submission's batch now; one that a killed run recorded before it had its batch is
        found by its metadata, or made from what the work table says it covers (cancelled,
        under ``--cancel``)."""
        if submission.batch_id is not None:
            return await self.client.retrieve(submission.batch_id)
        found = await self.client.find(submission.key, submission.file_id, submission.created - SINCE_SLACK_S)
        if found is not None:
            work.note_batch(self.conn, self.collection, submission.key, found.id, found.status)
            if self.options.cancel and not found.finished:
                await self._cancel(found)
            return found
        if self.options.cancel:
            self._fail(submission.key, "cancelled before its batch was made", count_attempt=False)
            return None
        if submission.file_id is not None:
            return await self._create(submission.key, None, submission.file_id, submission.created - SINCE_SLACK_S)
        content = self._rebuilt_file(submission.key)
        if content is None:  # no row of this run needs its texts any more
            self._fail(submission.key, "its texts are no longer in the source", count_attempt=False)
            return None
        return await self._create(submission.key, content, None, submission.created - SINCE_SLACK_S)

    def _rebuilt_file(self, key: str) -> bytes | None:
        """The request file of a submission whose upload or batch a killed run did not record."""
        covered = work.covered_texts(self.conn, self.collection, key)
        texts = dict(work.texts_of(self.conn, self.collection, self.write.run_id, [c.text_sha256 for c in covered]))
        if len(texts) < len({c.text_sha256 for c in covered}):
            return None
        limit = self.settings.max_input_tokens
        lines = bytearray()
        by_request: dict[str, list[work.CoveredText]] = {}
        for item in covered:
            by_request.setdefault(item.custom_id, []).append(item)
        for custom_id, items in by_request.items():
            sent = [self.counter.truncate(texts[i.text_sha256], limit) if i.truncated else texts[i.text_sha256]
                    for i in items]  # fmt: skip
            lines += request_line(custom_id, self.client.model, self.settings.dimensions, self.client.url, sent)
        return bytes(lines)

    async def _collect(self, submission: work.Submission, status: BatchStatus) -> None:
        conn, collection = self.conn, self.collection
        covered = work.covered_texts(conn, collection, submission.key)
        if status.status == "failed":
            others = sum(s.tokens for s in work.open_submissions(conn, collection) if s.key != submission.key)
            queue_full = status.error_code == "token_limit_exceeded"
            if queue_full:
                self._learn_limit(status, others, submission.tokens)
            # a batch refused for the queue while others were in it ran nothing: its texts lose no
            # attempt; one refused with nothing else queued is too large for the queue, and does
            reason = f"batch {status.id} failed: {status.error_code}: {status.error_message}"
            self._fail(submission.key, reason, count_attempt=not queue_full or others == 0)
            self.figures.collected += 1
            return
        output = await self.client.download(status.output_file_id) if status.output_file_id else None
        errors = await self.client.download(status.error_file_id) if status.error_file_id else None
        outcome = outcome_of(covered, output, errors, self.dimensions, status.status)
        answered = outcome.answered
        with conn.transaction():
            self.counts.add(write_answers(conn, self.write, [i.text_sha256 for i in answered], outcome.vectors,
                                          [i.tokens for i in answered], [i.truncated for i in answered],
                                          outcome.problems))  # fmt: skip
            if outcome.again:
                shas, alone, why = (list(column) for column in zip(*outcome.again, strict=True))
                work.send_again(conn, collection, shas, alone, why)
            work.close_submission(conn, collection, submission.key, status.status, outcome.tokens_billed)
            if outcome.failed:
                work.mark_failed(conn, collection, outcome.failed)
        self.figures.collected += 1
        self.figures.requests += outcome.requests
        self.figures.tokens_billed += outcome.tokens_billed
        self.progress_line.texts_done += sum(p is None for p in outcome.problems)

    def _learn_limit(self, status: BatchStatus, others: int, refused: int) -> None:
        """The organisation's enqueued-token limit, as the refusal says it; where it does not,
        what the other open batches hold, or half the refused one where none is open."""
        found = ENQUEUED_LIMIT.search(status.error_message or "")
        if found:
            self.enqueued_limit = int(found.group(1).replace(",", ""))
        else:
            self.enqueued_limit = max(1, others if others > 0 else refused // 2)
        logger.info("the organisation queues at most %d tokens: the rest waits", self.enqueued_limit)

    async def _cancel_open(self) -> None:
        for submission in work.open_submissions(self.conn, self.collection):
            if submission.batch_id is not None:
                await self._cancel(await self.client.retrieve(submission.batch_id))

    async def _cancel(self, status: BatchStatus) -> None:
        """Cancel a batch that can be: one cancelling or finalizing already ends by itself."""
        if status.finished or status.status in ("cancelling", "finalizing"):
            return
        try:
            await self.client.cancel(status.id)
            logger.info("cancelled batch %s", status.id)
        except ProviderStopError:
            raise
        except ProviderError as exc:  # it finished meanwhile, say: collected as it ended
            logger.info("could not cancel batch %s: %s", status.id, exc)
