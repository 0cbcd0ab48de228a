"""How many scoring rounds one stream may have in flight."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class RoundSlots:
    """Slots for one stream's scoring rounds: up to `limit` at once, but a round beyond the
    stream's first only while the whole orchestrator has fewer than `busy` rounds open.

    A lone stream pipelines: its next round's fan-out overlaps the one before. Streams that
    together keep the specialists busy score one round each at a time instead; their batches
    queue meanwhile and coalesce into fewer, larger rounds, and per-round costs (a Score call
    per specialist, a pass over history, calibration and incidents) are most of what a round
    costs. `sentinel bench`, 2 streams: 167k readings/s and 10.6 CPU ms per 1,000 readings
    with one round per stream, 150k and 11.8 with two (2026-11-29, 2 cores).

    One task acquires (the stream's processor); its own releases wake it. A stream waiting
    for a second slot is not woken when other streams' rounds end: it waits for its own
    round at most, which keeps this free of a wake-up per round for every waiting stream.
    """

    def __init__(self, limit: int, busy: int, rounds_open: Callable[[], int]) -> None:
        if limit < 1 or busy < 1:
            raise ValueError(f"need limit >= 1 and busy >= 1, got {limit} and {busy}")
        self._limit = limit
        self._busy = busy
        self._rounds_open = rounds_open
        self._held = 0
        self._freed = asyncio.Event()

    @property
    def held(self) -> int:
        return self._held

    def may_start(self) -> bool:
        if self._held == 0:
            return True
        return self._held < self._limit and self._rounds_open() < self._busy

    async def acquire(self) -> None:
        while not self.may_start():
            self._freed.clear()
            await self._freed.wait()
        self._held += 1

    def release(self) -> None:
        if self._held == 0:
            raise RuntimeError("release without a slot held")
        self._held -= 1
        self._freed.set()
