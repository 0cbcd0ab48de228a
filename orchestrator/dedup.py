"""Remember recently scored (client, batch id) pairs so a resent batch is not scored twice."""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Iterable

from sentinel.errors import BatchConflict


class DedupWindow:
    """Bounded memory of the last `capacity` batches per orchestrator process, in at most
    `max_bytes` (whichever bound is reached first; the oldest batches are forgotten).

    A batch resent by its client after a reconnect is acked again (as a duplicate) but not
    scored again, as long as it is among the last `capacity` batches seen. A batch counts as
    seen once it is scored (`commit`); while its round is in flight it is `pending` (a resend
    arriving then is a duplicate too), and a round that fails is forgotten (`abandon`), so its
    resend is scored. Batches without a client id cannot be recognised and are always scored.

    Each entry keeps a digest of the batch's readings (`batches.readings_digest`): a batch id
    that comes back with *other* readings is not a resend, and `seen` raises `BatchConflict`
    rather than acking it as a duplicate (its readings would be dropped silently). An empty
    digest on either side matches anything.

    Memory (`bytes`): an entry is a key tuple, ints, 16 digest bytes and dict overhead,
    ENTRY_BYTES (measured with tracemalloc: ~335); every client id is kept once however many
    entries and streams use it, and counted once. So long client ids (an authenticated
    identity can be long) cost per client, not per batch.
    """

    ENTRY_BYTES = 340

    def __init__(self, capacity: int = 100_000, max_bytes: int | None = None) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.bytes = 0
        self._seen: OrderedDict[tuple[str, int], tuple[int, bytes]] = OrderedDict()
        self._pending: dict[tuple[str, int], tuple[int, bytes]] = {}
        # client id -> [the one copy entries share, entries using it]
        self._clients: dict[str, list] = {}

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
        if client_id and self.capacity > 0 and (client_id, batch_id) not in self._pending:
            self._pending[(self._hold(client_id), batch_id)] = (readings, digest)

    def commit(self, client_id: str, batch_id: int) -> None:
        """The batch was scored: remember it."""
        entry = self._pending.pop((client_id, batch_id), None)
        if entry is not None:
            self._drop(client_id)
            self.remember(client_id, batch_id, *entry)

    def abandon(self, client_id: str, batch_id: int) -> None:
        """The batch's round failed: forget it, so that a resend is scored."""
        if self._pending.pop((client_id, batch_id), None) is not None:
            self._drop(client_id)

    def remember(self, client_id: str, batch_id: int, readings: int, digest: bytes = b"") -> None:
        if not client_id or self.capacity <= 0:
            return
        key = (client_id, batch_id)
        if key not in self._seen:
            key = (self._hold(client_id), batch_id)
        self._seen[key] = (readings, digest)
        while self._seen and (
            len(self._seen) > self.capacity
            or (self.max_bytes is not None and self.bytes > self.max_bytes)
        ):
            (forgotten, _), _ = self._seen.popitem(last=False)
            self._drop(forgotten)

    def _hold(self, client_id: str) -> str:
        """The copy of `client_id` entries share, counted once; one entry more uses it."""
        shared = self._clients.get(client_id)
        if shared is None:
            shared = self._clients[client_id] = [client_id, 0]
            self.bytes += sys.getsizeof(client_id)
        shared[1] += 1
        self.bytes += self.ENTRY_BYTES
        return shared[0]

    def _drop(self, client_id: str) -> None:
        """One entry less uses `client_id`; the last one frees it."""
        shared = self._clients[client_id]
        shared[1] -= 1
        self.bytes -= self.ENTRY_BYTES
        if not shared[1]:
            del self._clients[client_id]
            self.bytes -= sys.getsizeof(client_id)

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
