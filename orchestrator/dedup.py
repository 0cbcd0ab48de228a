"""Remember recently scored (client, batch id) pairs so a resent batch is not scored twice."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from sentinel.errors import BatchConflict


class DedupWindow:
    """Bounded memory of the last `capacity` batches per orchestrator process.

    A batch resent by its client after a reconnect is acked again (as a duplicate) but not
    scored again, as long as it is among the last `capacity` batches seen. A batch counts as
    seen once it is scored (`commit`); while its round is in flight it is `pending` (a resend
    arriving then is a duplicate too), and a round that fails is forgotten (`abandon`), so its
    resend is scored. Batches without a client id cannot be recognised and are always scored.

    Each entry keeps a digest of the batch's readings (`batches.readings_digest`): a batch id
    that comes back with *other* readings is not a resend, and `seen` raises `BatchConflict`
    rather than acking it as a duplicate (its readings would be dropped silently). An empty
    digest on either side matches anything.

    Memory: an entry is a key tuple, an int, 16 digest bytes and dict overhead, ~250 bytes;
    client ids are shared with the stream that sent them and bounded in length by the servicer.
    """

    ENTRY_BYTES = 250

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[tuple[str, int], tuple[int, bytes]] = OrderedDict()
        self._pending: dict[tuple[str, int], tuple[int, bytes]] = {}

    def seen(self, client_id: str, batch_id: int, digest: bytes = b"") -> int | None:
        """Readings accepted the first time, or None if this batch is new.

        Raises BatchConflict if the batch id was accepted with readings of another digest."""
        if not client_id:
            return None
        key = (client_id, batch_id)
        entry = self._seen.get(key) or self._pending.get(key)
        if entry is None:
            return None
        readings, first_digest = entry
        if digest and first_digest and digest != first_digest:
            raise BatchConflict(batch_id)
        return readings

    def begin(self, client_id: str, batch_id: int, readings: int, digest: bytes = b"") -> None:
        """A new batch entered a scoring round."""
        if client_id and self.capacity > 0:
            self._pending[(client_id, batch_id)] = (readings, digest)

    def commit(self, client_id: str, batch_id: int) -> None:
        """The batch was scored: remember it."""
        entry = self._pending.pop((client_id, batch_id), None)
        if entry is not None:
            self.remember(client_id, batch_id, *entry)

    def abandon(self, client_id: str, batch_id: int) -> None:
        """The batch's round failed: forget it, so that a resend is scored."""
        self._pending.pop((client_id, batch_id), None)

    def remember(self, client_id: str, batch_id: int, readings: int, digest: bytes = b"") -> None:
        if not client_id or self.capacity <= 0:
            return
        self._seen[(client_id, batch_id)] = (readings, digest)
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)

    @property
    def approx_bytes(self) -> int:
        return (len(self._seen) + len(self._pending)) * self.ENTRY_BYTES

    def items(self) -> list[list]:
        """[client, batch id, readings, digest hex] of scored batches, oldest first."""
        return [
            [client, batch, readings, digest.hex()]
            for (client, batch), (readings, digest) in self._seen.items()
        ]

    @staticmethod
    def parse_items(items: Iterable[Iterable]) -> list[tuple[str, int, int, bytes]]:
        """Entries as `items()` writes them; ValueError/TypeError if one is malformed."""
        return [
            (str(client), int(batch), int(readings), bytes.fromhex(str(digest)))
            for client, batch, readings, digest in items
        ]

    def restore(self, items: Iterable[Iterable]) -> None:
        for client, batch, readings, digest in self.parse_items(items):
            self.remember(client, batch, readings, digest)
