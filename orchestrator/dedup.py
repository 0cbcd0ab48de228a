"""Remember recently scored (client id, batch id) pairs so a resent batch is not scored twice."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable


class DedupWindow:
    """Bounded memory of the last `capacity` batches per orchestrator process.

    A batch resent by its client after a reconnect is acked again (as a duplicate) but not
    scored again, as long as it is among the last `capacity` batches seen. A batch counts as
    seen once it is scored (`commit`); while its round is in flight it is `pending` (a resend
    arriving then is a duplicate too), and a round that fails is forgotten (`abandon`), so its
    resend is scored. Batches without a client id cannot be recognised and are always scored.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[tuple[str, int], int] = OrderedDict()
        self._pending: dict[tuple[str, int], int] = {}

    def seen(self, client_id: str, batch_id: int) -> int | None:
        """Readings accepted the first time, or None if this batch is new."""
        if not client_id:
            return None
        key = (client_id, batch_id)
        first = self._seen.get(key)
        return self._pending.get(key) if first is None else first

    def begin(self, client_id: str, batch_id: int, readings: int) -> None:
        """A new batch entered a scoring round."""
        if client_id and self.capacity > 0:
            self._pending[(client_id, batch_id)] = readings

    def commit(self, client_id: str, batch_id: int) -> None:
        """The batch was scored: remember it."""
        readings = self._pending.pop((client_id, batch_id), None)
        if readings is not None:
            self.remember(client_id, batch_id, readings)

    def abandon(self, client_id: str, batch_id: int) -> None:
        """The batch's round failed: forget it, so that a resend is scored."""
        self._pending.pop((client_id, batch_id), None)

    def remember(self, client_id: str, batch_id: int, readings: int) -> None:
        if not client_id or self.capacity <= 0:
            return
        self._seen[(client_id, batch_id)] = readings
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)

    def items(self) -> list[list]:
        """[client id, batch id, readings] of the scored batches, oldest first (checkpoints)."""
        return [[client, batch, readings] for (client, batch), readings in self._seen.items()]

    def restore(self, items: Iterable[Iterable]) -> None:
        for client, batch, readings in items:
            self.remember(str(client), int(batch), int(readings))
