"""When to checkpoint and what goes in: restore at start, save every N seconds and on drain.

A checkpoint is taken with new scoring rounds held back until the open ones have finished
(`ScoringPipeline.quiesced`, at most `quiesce_seconds`), so the history, the incidents and the
dedup memory in it agree: every batch in the history is either remembered as scored or not in
the checkpoint at all. The copy happens on the event loop (numpy copies, a few hundred ms at
100,000 sensors); the file is written in a thread while traffic flows again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable

from .checkpoint import Checkpoint, CheckpointRefused, load_latest, write_checkpoint
from .dedup import DedupWindow
from .history import History
from .incidents import Incident, IncidentTracker
from .metrics import OrchestratorMetrics
from .pipeline import ScoringPipeline

log = logging.getLogger(__name__)


class Checkpointer:
    def __init__(
        self,
        state_dir: str,
        interval_seconds: float,
        history: History,
        incidents: IncidentTracker,
        dedup: DedupWindow,
        pipeline: ScoringPipeline,
        metrics: OrchestratorMetrics,
        quiesce_seconds: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state_dir = state_dir
        self.interval_seconds = interval_seconds
        self._history = history
        self._incidents = incidents
        self._dedup = dedup
        self._pipeline = pipeline
        self._metrics = metrics
        self._quiesce_seconds = quiesce_seconds
        self._clock = clock
        self._lock = asyncio.Lock()

    def restore(self) -> Checkpoint | None:
        """Load the newest usable checkpoint (before any traffic and any `Describe`)."""
        started = time.perf_counter()
        checkpoint = load_latest(self.state_dir, self._validate)
        if checkpoint is None:
            log.info("no checkpoint to restore", extra={"state_dir": self.state_dir})
            return None
        sensors = self._history.restore(checkpoint.history)
        now = self._clock()
        incidents = [Incident(**fields) for fields in checkpoint.incidents]
        for incident in incidents:
            # The sensor could not reach us while we were down: its stale period starts now.
            incident.last_seen = max(incident.last_seen, now)
        self._incidents.restore(incidents)
        self._dedup.restore(checkpoint.dedup)
        log.info(
            "checkpoint restored",
            extra={
                "state_dir": self.state_dir,
                "sensors": sensors,
                "open_incidents": len(incidents),
                "dedup_batches": len(checkpoint.dedup),
                "age_seconds": round(now - checkpoint.written_at, 1),
                "seconds": round(time.perf_counter() - started, 3),
            },
        )
        return checkpoint

    def _validate(self, checkpoint: Checkpoint) -> None:
        """Refuse a checkpoint whole if any part of it could not be loaded."""
        try:
            self._history.validate(checkpoint.history)
            for fields in checkpoint.incidents:
                Incident(**fields)
            DedupWindow.parse_items(checkpoint.dedup)
        except (TypeError, ValueError) as error:
            raise CheckpointRefused(f"cannot be loaded: {error}") from error

    def capture(self) -> Checkpoint:
        """A consistent copy of the state (call with rounds quiesced)."""
        return Checkpoint(
            written_at=self._clock(),
            history=self._history.snapshot(),
            incidents=[dataclasses.asdict(i) for i in self._incidents.open_incidents()],
            dedup=self._dedup.items(),
        )

    async def save(self) -> bool:
        """Take and write one checkpoint; False (logged, counted) if it failed."""
        async with self._lock:
            started = time.perf_counter()
            async with self._pipeline.quiesced(self._quiesce_seconds) as quiet:
                checkpoint = self.capture()
            copied = time.perf_counter() - started
            try:
                size = await asyncio.to_thread(write_checkpoint, self.state_dir, checkpoint)
            except OSError as error:
                self._metrics.checkpoints.labels("failed").inc()
                log.error(
                    "checkpoint not written",
                    extra={"state_dir": self.state_dir, "error": repr(error)},
                )
                return False
            seconds = time.perf_counter() - started
            self._metrics.checkpoints.labels("written").inc()
            self._metrics.checkpoint_duration.observe(seconds)
            self._metrics.checkpoint_bytes.set(size)
            log.info(
                "checkpoint written",
                extra={
                    "state_dir": self.state_dir,
                    "sensors": len(checkpoint.history.sensor_ids),
                    "bytes": size,
                    "seconds": round(seconds, 3),
                    "copy_seconds": round(copied, 3),
                    # Not quiet: rounds still open were left out of dedup but are in the history;
                    # after a crash their resends are scored (at-least-once), not lost.
                    "quiesced": quiet,
                },
            )
            return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_seconds)
            # Shielded: cancelling the loop at shutdown must not abandon a write half-way; the
            # final save waits for it on the lock.
            await asyncio.shield(self.save())
