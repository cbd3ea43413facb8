"""The log verbs of MemoryStore: the turn log, pictures, and the job queue."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from datetime import datetime

from personavlm.errors import NotFoundError, ValidationError
from personavlm.media.blobs import ImageSource, is_blob_id
from personavlm.memory.queue import JOB_STATUSES, JobRecord, QueuedJob, QueueStatus
from personavlm.memory.records import ImageRef, IngestReport, Turn
from personavlm.memory.store_core import StoreCore
from personavlm.memory.turnlog import TurnInput
from personavlm.memory.unit import IndexedTurn, Tx, turn_index_text
from personavlm.memory.validate import check_user_id
from personavlm.timeutil import TimeWindow

__all__ = ["INGEST_BATCH", "LogVerbs"]

# Turns per ingest transaction: large enough that per-transaction costs vanish, small enough
# that a crash loses at most this many turns of work (the next ingest redoes them).
INGEST_BATCH = 256


class LogVerbs(StoreCore):
    def append_turns(
        self,
        user_id: str,
        turns: Sequence[TurnInput],
        *,
        actor: str = "ingest",
        batch_size: int = INGEST_BATCH,
        progress: Callable[[int], None] | None = None,
    ) -> IngestReport:
        """Append turns to the log, each with a turn-level episodic memory so it is
        retrievable before any model has summarised it. Idempotent by turn id.

        Every turn is checked against the log first (ids re-used with other content, time
        order), so a bad turn fails before anything is written. Then batches of `batch_size`
        commit one by one: a crash keeps whole batches, and running the ingest again
        completes it.
        """
        pending = self.check_turns(user_id, turns)
        added = 0
        for offset in range(0, len(pending), batch_size):
            batch = self.index_turns(pending[offset : offset + batch_size])
            with self.transaction(user_id) as tx:
                tx.users.ensure(user_id)
                added += sum(tx.append_turn(user_id, t, actor) is not None for t in batch)
            if progress is not None:
                progress(len(batch))
        with self.reading() as tx:
            sessions = tx.turns.session_count(user_id)
        return IngestReport(
            user_id=user_id, added=added, skipped=len(turns) - added, sessions=sessions
        )

    def check_turns(self, user_id: str, turns: Sequence[TurnInput]) -> builtins.list[TurnInput]:
        """The turns append_turns would add; raises what it would raise, writing nothing."""
        check_user_id(user_id)
        with self.reading() as tx:
            return tx.turns.new_turns(user_id, turns)

    def index_turns(self, turns: Sequence[TurnInput]) -> builtins.list[IndexedTurn]:
        """Turns with their episodic entries' text and vectors (for `tx.append_turn`)."""
        if not turns:
            return []
        texts = [turn_index_text(t) for t in turns]
        vectors = self._embed(texts)
        return [IndexedTurn(t, x, v) for t, x, v in zip(turns, texts, vectors, strict=True)]

    def store_image(self, source: ImageSource, *, caption: str | None = None) -> ImageRef:
        """Store an image (file path, bytes or data URL) content-addressed by sha256 and
        register it; returns its reference. Storing the same bytes again is a no-op."""
        blob = self.blobs.put(source)
        with self._engine.write(f"image:{blob.id}") as conn:
            return Tx(conn).images.register(blob, caption)

    def turns(
        self,
        user_id: str,
        *,
        start: str | datetime | None = None,
        end: str | datetime | None = None,
        session_id: int | None = None,
        limit: int = 1000,
        after: tuple[datetime, int] | None = None,
    ) -> builtins.list[Turn]:
        """The user's turns in time order, optionally within [start, end] or one session;
        `after` = (time, id) of the last turn of the previous page."""
        window = TimeWindow.parse(start, end)
        with self.reading() as tx:
            tx.users.require(user_id)
            return tx.turns.page(
                user_id, window=window, session_id=session_id, limit=limit, after=after
            )

    def turns_by_ids(self, user_id: str, turn_ids: Sequence[int]) -> builtins.list[Turn]:
        """These turns of the user, in the order asked; NotFoundError names any missing."""
        with self.reading() as tx:
            found = tx.turns.by_ids(builtins.list(turn_ids))
        missing = [t for t in turn_ids if t not in found or found[t].user_id != user_id]
        if missing:
            raise NotFoundError(f"turns {missing} are not turns of user {user_id!r}")
        return [found[t] for t in turn_ids]

    def latest_turn(self, user_id: str) -> Turn | None:
        with self.reading() as tx:
            return tx.turns.latest(user_id)

    # ----------------------------------------------------------------- job queue

    def claim_job(
        self,
        worker: str,
        *,
        lease_s: float = 600.0,
        user_id: str | None = None,
        ignore_backoff: bool = False,
        skip_users: frozenset[str] = frozenset(),
    ) -> QueuedJob | None:
        """The next runnable job, leased to `worker` (see memory/queue.py)."""
        with self._engine.write("jobs") as conn:
            return Tx(conn).queue.claim(
                worker,
                lease_s=lease_s,
                user_id=user_id,
                ignore_backoff=ignore_backoff,
                skip_users=skip_users,
            )

    def finish_job(self, job_id: int) -> None:
        """Mark a job done that had nothing to write (`tx.queue.finish` otherwise)."""
        with self._engine.write("jobs") as conn:
            Tx(conn).queue.finish(job_id)

    def fail_job(
        self,
        job: QueuedJob,
        error: str,
        *,
        replies: Sequence[str] = (),
        max_attempts: int | None = None,
        strike: bool = True,
    ) -> bool:
        """Record a failed attempt (memory/queue.py); True when the job went dead."""
        with self._engine.write("jobs") as conn:
            return Tx(conn).queue.fail(
                job.id,
                error,
                job.attempts,
                replies=replies,
                max_attempts=max_attempts,
                strike=strike,
            )

    def jobs(
        self, user_id: str, *, status: str | None = None, limit: int = 100
    ) -> builtins.list[JobRecord]:
        """The user's update jobs, newest first (of one status: pending, done, dead,
        dropped)."""
        if status is not None and status not in JOB_STATUSES:
            raise ValidationError(f"job status {status!r} must be one of {JOB_STATUSES}")
        if not 1 <= limit <= 1000:
            raise ValidationError(f"limit must be in 1..1000, got {limit}")
        with self.reading() as tx:
            tx.users.require(user_id)
            return tx.queue.jobs(user_id, status=status, limit=limit)

    def retry_job(self, user_id: str, job_id: int) -> JobRecord:
        """Put a dead job back at its place in the user's queue (attempts counted afresh)."""
        with self.transaction(user_id) as tx:
            tx.users.require(user_id)
            return tx.queue.retry(user_id, job_id)

    def release_claims(self, is_gone: Callable[[str], bool]) -> int:
        """End the claims whose claimant `is_gone` says is gone (agent/worker.py decides:
        the claimant names are the workers'); how many jobs are claimable again."""
        with self._engine.write("jobs") as conn:
            queue = Tx(conn).queue
            return queue.release([job for job, who in queue.held_claims() if is_gone(who)])

    def queue_status(self, user_id: str | None = None) -> QueueStatus:
        with self.reading() as tx:
            return tx.queue.status(user_id)

    def images(self, image_ids: Sequence[str]) -> builtins.list[ImageRef]:
        """The stored images with these ids, in the order asked; NotFoundError names any missing."""
        with self.reading() as tx:
            found = tx.images.by_ids(builtins.list(dict.fromkeys(image_ids)))
        missing = [i for i in image_ids if i not in found]
        if missing:
            raise NotFoundError(f"images {missing} are not stored")
        return [found[i] for i in image_ids]

    def user_image(self, user_id: str, image_id: str) -> ImageRef:
        """A picture one of the user's turns or memories shows; NotFoundError otherwise,
        also for a picture only other users have (its existence is not theirs to learn)."""
        if not is_blob_id(image_id):
            raise ValidationError(f"{image_id!r} is not an image id (64 lower-case hex digits)")
        with self.reading() as tx:
            tx.users.require(user_id)
            found = tx.images.by_ids([image_id]) if tx.images.shown_by(user_id, image_id) else {}
        if image_id not in found:
            raise NotFoundError(f"no image {image_id} for user {user_id!r}")
        return found[image_id]
