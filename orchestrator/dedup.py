"""Remember recently scored (client id, batch id) pairs so a resent batch is not scored twice."""

from __future__ import annotations

from collections import OrderedDict


class DedupWindow:
    """Bounded memory of the last `capacity` batches per orchestrator process.

    A batch resent by its client after a reconnect is acked again (as a duplicate) but not
    scored again, as long as it is among the last `capacity` batches seen. Batches without a
    client id cannot be recognised and are always scored.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[tuple[str, int], int] = OrderedDict()

    def seen(self, client_id: str, batch_id: int) -> int | None:
        """Readings accepted the first time, or None if this batch is new."""
        if not client_id:
            return None
        return self._seen.get((client_id, batch_id))

    def remember(self, client_id: str, batch_id: int, readings: int) -> None:
        if not client_id or self.capacity <= 0:
            return
        self._seen[(client_id, batch_id)] = readings
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
