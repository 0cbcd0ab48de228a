"""Fan alerts out to any number of WatchAlerts subscribers without ever blocking ingest."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from sentinel.v1 import orchestrator_pb2


class SubscriberTooSlow(Exception):
    """A subscriber's bounded queue overflowed; its stream ends with RESOURCE_EXHAUSTED."""


_END = object()


class AlertHub:
    def __init__(self, queue_size: int = 1000, on_drop: Callable[[], None] | None = None) -> None:
        self._queue_size = queue_size
        self._subscribers: dict[asyncio.Queue, str] = {}
        self._on_drop = on_drop or (lambda: None)
        self._closed = False

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, alert: orchestrator_pb2.Alert) -> None:
        for queue, prefix in list(self._subscribers.items()):
            if not alert.sensor_id.startswith(prefix):
                continue
            try:
                queue.put_nowait(alert)
            except asyncio.QueueFull:
                # Never block or buffer without bound for a slow reader: end its stream loudly.
                del self._subscribers[queue]
                queue.get_nowait()
                queue.put_nowait(SubscriberTooSlow())
                self._on_drop()

    async def subscribe(
        self,
        prefix: str = "",
        snapshot: Callable[[], list[orchestrator_pb2.Alert]] | None = None,
    ) -> AsyncIterator[orchestrator_pb2.Alert]:
        """Alerts for sensors starting with `prefix`; first `snapshot()` (what is open now),
        taken in the same step as the subscription so no alert falls between the two."""
        queue: asyncio.Queue = asyncio.Queue(self._queue_size)
        self._subscribers[queue] = prefix
        opening = snapshot() if snapshot is not None else []
        try:
            for alert in opening:
                yield alert
            while True:
                if self._closed and queue.empty():
                    return
                item = await queue.get()
                if item is _END:
                    return
                if isinstance(item, SubscriberTooSlow):
                    raise item
                yield item
        finally:
            self._subscribers.pop(queue, None)

    def close(self) -> None:
        """End every subscription cleanly (shutdown)."""
        self._closed = True
        for queue in list(self._subscribers):
            # A full queue needs no marker: its reader sees `_closed` once it has drained it,
            # so no queued alert is dropped at shutdown.
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(_END)
        self._subscribers.clear()
