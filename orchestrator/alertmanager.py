"""Deliver alert events to Prometheus Alertmanager (v2 API), never blocking the event loop.

An `AlertmanagerSender` is a pipeline sink: it is called synchronously on the event loop with
every `AlertEvent` and only puts the alert's latest state into a bounded, coalescing outbox.
One task drains the outbox: batches of alerts are POSTed to `{url}/api/v2/alerts` from a worker
thread (stdlib urllib, a timeout on every request), retried with capped exponential backoff
while Alertmanager is unreachable. A second task re-sends open incidents, so Alertmanager
keeps showing what is still open after it restarted (it keeps alerts in memory only).

What an alert looks like (`build_alert`):
- labels `alertname="SentinelAnomaly"`, `sensor_id`, `severity` and the static extra labels.
  No replica name and no alert id: two replicas reporting one sensor's incident produce one
  alert in Alertmanager (same label set = same fingerprint). The severity is a setting, not
  derived from the incident, because labels must not change while an incident is open (a new
  label set is a new alert, and the old one would be left firing).
- `startsAt` = the first anomalous reading's timestamp. `endsAt` of an open incident = the
  time by which this replica would resolve it as `stale` (last reading seen + stale_after),
  plus a horizon of 3 resend periods; so Alertmanager's resolve_timeout never closes an open
  incident, and the alert of an orchestrator that died expires on its own about when a live
  one would have resolved it. `endsAt` of a resolution = its resolved time.

Alertmanager's merge of updates to one fingerprint (verified against alertmanager 0.25, see
tests/orchestrator/test_alertmanager.py): the earliest startsAt is kept, annotations come from
the latest update, and an update whose endsAt is in the past resolves the alert whoever sent
it. Hence the handover rule: when a sensor moved from replica A to replica B mid-incident, A
later resolves its incident as `stale`, and posting that would close B's open alert. So before
posting a `stale` resolution the sender asks Alertmanager for the sensor's active alert and
skips the resolution if it carries another `alert_id` annotation (another replica reported it
since). A replica re-sends an open incident only when its sensor sent readings to it since the
previous post, so a replica that lost the sensor stops overwriting the new owner's annotations.

The outbox is keyed by alert id: a newer state of an alert replaces the queued one in place
(the latest state wins; an open incident's resolution replaces its queued opening), and when
the outbox is full new alerts are dropped and counted. What a drop costs: a dropped opening is
posted at the next re-send if its sensor is still reporting; a dropped resolution leaves the
alert to expire at its endsAt.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import random
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from .incidents import AlertEvent, Incident, IncidentTracker

if TYPE_CHECKING:  # settings.py imports this module's parsers
    from .settings import OrchestratorSettings

log = logging.getLogger(__name__)

ALERTNAME = "SentinelAnomaly"
RESERVED_LABELS = frozenset({"alertname", "sensor_id", "severity"})
MAX_BATCH_ALERTS = 256  # alerts per POST
HORIZON_RESENDS = 3  # endsAt of an open alert reaches this many resend periods past stale
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def parse_labels(spec: str) -> dict[str, str]:
    """`name=value,...` → {name: value}: static labels added to every alert (e.g. cluster)."""
    labels: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, value = part.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not _LABEL_NAME.match(name) or not value:
            raise ValueError(f"alertmanager label {part!r}: expected name=value")
        if name in RESERVED_LABELS:
            raise ValueError(f"alertmanager label {name!r} is set by the orchestrator")
        if name in labels:
            raise ValueError(f"alertmanager label {name!r} given twice")
        labels[name] = value
    return labels


def check_url(url: str) -> str:
    """An Alertmanager base URL (http or https, no query); empty = not configured."""
    if url:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
            raise ValueError(f"alertmanager url {url!r}: expected http(s)://host:port[/prefix]")
    return url


@dataclass(frozen=True, slots=True)
class AlertmanagerOptions:
    url: str
    """Base URL of Alertmanager, e.g. http://alertmanager:9093 (user:password@ = basic auth)."""
    severity: str = "warning"
    """Value of the `severity` label of every alert."""
    labels: Mapping[str, str] = field(default_factory=dict)
    """Static extra labels of every alert (e.g. cluster)."""
    generator_url: str = ""
    """generatorURL template; {sensor_id}, {alert_id} and {trace_id} are filled in."""
    resend_seconds: float = 60.0
    """Open incidents whose sensor kept reporting are re-sent this often."""
    stale_after_seconds: float = 900.0
    """The orchestrator's stale rule (an open alert's endsAt covers it)."""
    queue: int = 10_000
    """Alerts waiting for delivery at most; newer ones are dropped and counted beyond this."""
    timeout_seconds: float = 5.0
    """Timeout of each HTTP request."""
    backoff_seconds: float = 0.5
    """First retry delay while Alertmanager is unreachable (doubles per failure)."""
    max_backoff_seconds: float = 30.0
    """Longest retry delay."""
    flush_seconds: float = 2.0
    """On shutdown, time given to deliver what is still queued."""

    @property
    def horizon_seconds(self) -> float:
        return HORIZON_RESENDS * self.resend_seconds

    @classmethod
    def from_settings(cls, settings: OrchestratorSettings) -> AlertmanagerOptions:
        """Its `alertmanager_*` fields and the stale rule."""
        return cls(
            url=settings.alertmanager_url,
            severity=settings.alertmanager_severity,
            labels=parse_labels(settings.alertmanager_labels),
            generator_url=settings.alertmanager_generator_url,
            resend_seconds=settings.alertmanager_resend_seconds,
            stale_after_seconds=settings.stale_after_seconds,
            queue=settings.alertmanager_queue,
            timeout_seconds=settings.alertmanager_timeout_seconds,
            backoff_seconds=settings.alertmanager_backoff_seconds,
            max_backoff_seconds=settings.alertmanager_max_backoff_seconds,
            flush_seconds=settings.alertmanager_flush_seconds,
        )


# ----------------------------------------------------------------------------------------------
# Pure parts: the payload, the outbox.


def rfc3339(unix_seconds: float) -> str:
    return datetime.fromtimestamp(unix_seconds, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def alert_labels(sensor_id: str, options: AlertmanagerOptions) -> dict[str, str]:
    return {
        **options.labels,
        "alertname": ALERTNAME,
        "sensor_id": sensor_id,
        "severity": options.severity,
    }


def build_alert(
    incident: Incident, state: str, now: float, options: AlertmanagerOptions
) -> dict[str, Any]:
    """The v2 API's postable alert for an incident that is `open` or `resolved` at `now`."""
    first = incident.first_timestamp / 1e9
    if state == "open":
        ends = max(now, incident.last_seen + options.stale_after_seconds) + options.horizon_seconds
        summary = f"Anomaly on sensor {incident.sensor_id}"
    else:
        # Alertmanager takes an endsAt in the past as resolved now; one in the future would
        # keep the alert firing until then (a reading stamped ahead of the clock).
        ends = min(incident.resolved_timestamp / 1e9, now)
        summary = f"Anomaly on sensor {incident.sensor_id} resolved ({incident.resolve_reason})"
    # Alertmanager refuses an alert that ends before it starts (400 for the batch).
    starts = min(first, ends, now)
    annotations = {
        "summary": summary,
        "reasons": "; ".join(incident.reasons),
        "engine_versions": ", ".join(incident.engine_versions),
        "trace_id": incident.trace_id,
        "alert_id": incident.alert_id,
        "peak_value": f"{incident.peak_value:g}",
        "anomalous_readings": str(incident.anomalous_readings),
    }
    if state != "open":
        annotations["resolve_reason"] = incident.resolve_reason
    alert: dict[str, Any] = {
        "labels": alert_labels(incident.sensor_id, options),
        "annotations": {k: v for k, v in annotations.items() if v},
        "startsAt": rfc3339(starts),
        "endsAt": rfc3339(ends),
    }
    if options.generator_url:
        alert["generatorURL"] = (
            options.generator_url.replace("{sensor_id}", urllib.parse.quote(incident.sensor_id))
            .replace("{alert_id}", incident.alert_id)
            .replace("{trace_id}", incident.trace_id)
        )
    return alert


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One alert's latest state, waiting for delivery."""

    alert_id: str
    state: str  # "open" | "resolved"
    alert: dict[str, Any]
    check_owner: bool = False  # a `stale` resolution: post only if no other replica owns it


class Outbox:
    """Bounded, coalescing queue of alerts by alert id; oldest first, latest state wins."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, Outgoing] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, alert_id: str) -> Outgoing | None:
        return self._items.get(alert_id)

    def put(self, item: Outgoing) -> bool:
        """Queue `item` (replacing a queued state of the same alert in place); False = full."""
        if item.alert_id in self._items:
            self._items[item.alert_id] = item
            return True
        if len(self._items) >= self.capacity:
            return False
        self._items[item.alert_id] = item
        return True

    def take(self, limit: int) -> list[Outgoing]:
        taken: list[Outgoing] = []
        while self._items and len(taken) < limit:
            taken.append(self._items.popitem(last=False)[1])
        return taken

    def requeue(self, items: Sequence[Outgoing]) -> int:
        """Put back items that failed, at the front, unless a newer state of the same alert
        arrived meanwhile. Returns how many did not fit (dropped)."""
        dropped = 0
        for item in reversed(items):
            if item.alert_id in self._items:
                continue
            if len(self._items) >= self.capacity:
                dropped += 1
                continue
            self._items[item.alert_id] = item
            self._items.move_to_end(item.alert_id, last=False)
        return dropped


# ----------------------------------------------------------------------------------------------
# HTTP.


class DeliveryError(Exception):
    def __init__(self, message: str, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


class Transport(Protocol):
    def post(self, alerts: Sequence[dict[str, Any]], timeout: float) -> None: ...

    def active_alert_ids(self, labels: Mapping[str, str], timeout: float) -> set[str]: ...


def _matcher(name: str, value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'{name}="{escaped}"'


class HttpTransport:
    """Blocking urllib calls (run in a worker thread); no proxies from the environment."""

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        netloc = parts.hostname or ""
        if ":" in netloc:
            netloc = f"[{netloc}]"
        if parts.port:
            netloc += f":{parts.port}"
        self.base = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        self._headers = {"Content-Type": "application/json", "User-Agent": "sentinel-orchestrator"}
        if parts.username:
            user = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _call(self, request: urllib.request.Request, timeout: float) -> bytes:
        try:
            with self._opener.open(request, timeout=timeout) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:200].decode(errors="replace").strip()
            # 4xx (but timeouts and rate limits) will fail again: do not retry those.
            retry = exc.code >= 500 or exc.code in (408, 429)
            raise DeliveryError(f"HTTP {exc.code} {detail}", retry) from None
        except (OSError, ValueError) as exc:  # URLError, timeouts, refused, reset, bad reply
            raise DeliveryError(str(getattr(exc, "reason", exc)), retry=True) from None

    def post(self, alerts: Sequence[dict[str, Any]], timeout: float) -> None:
        body = json.dumps(list(alerts)).encode()
        request = urllib.request.Request(
            f"{self.base}/api/v2/alerts", body, self._headers, method="POST"
        )
        self._call(request, timeout)

    def active_alert_ids(self, labels: Mapping[str, str], timeout: float) -> set[str]:
        query = urllib.parse.urlencode([("filter", _matcher(k, v)) for k, v in labels.items()])
        request = urllib.request.Request(
            f"{self.base}/api/v2/alerts?{query}", headers=self._headers, method="GET"
        )
        try:
            alerts = json.loads(self._call(request, timeout))
        except json.JSONDecodeError as exc:
            raise DeliveryError(f"bad reply to GET alerts: {exc}", retry=True) from None
        # Resolved alerts are not listed by the v2 API; what is listed is active.
        return {a.get("annotations", {}).get("alert_id", "") for a in alerts}


# ----------------------------------------------------------------------------------------------
# The sink.


class AlertmanagerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.sent = Counter(
            "sentinel_orchestrator_alertmanager_sent",
            "Alerts accepted by Alertmanager, by state.",
            ("state",),
            registry=registry,
        )
        self.failed = Counter(
            "sentinel_orchestrator_alertmanager_failed",
            "Requests to Alertmanager that failed (retried with backoff unless refused).",
            registry=registry,
        )
        self.dropped = Counter(
            "sentinel_orchestrator_alertmanager_dropped",
            "Alerts never delivered: queue_full, rejected (4xx) or shutdown (flush deadline).",
            ("reason",),
            registry=registry,
        )
        self.handover_skipped = Counter(
            "sentinel_orchestrator_alertmanager_handover_skipped",
            "Stale resolutions not posted because another replica reported the sensor since.",
            registry=registry,
        )
        self.queued = Gauge(
            "sentinel_orchestrator_alertmanager_queue",
            "Alerts waiting for delivery to Alertmanager.",
            registry=registry,
        )
        for reason in ("queue_full", "rejected", "shutdown"):
            self.dropped.labels(reason)
        for state in ("open", "resolved"):
            self.sent.labels(state)


class AlertmanagerSender:
    """Pipeline sink → Alertmanager. start() inside the event loop; stop() flushes."""

    def __init__(
        self,
        options: AlertmanagerOptions,
        incidents: IncidentTracker,
        registry: CollectorRegistry,
        transport: Transport | None = None,
        clock=time.time,
    ) -> None:
        self.options = options
        self.incidents = incidents
        self.metrics = AlertmanagerMetrics(registry)
        self.transport = transport or HttpTransport(options.url)
        self.outbox = Outbox(options.queue)
        self.metrics.queued.set_function(lambda: len(self.outbox))
        self._clock = clock
        # alert id -> (sensor id, the incident's last_seen when it was last queued); see resend.
        self._posted_seen: dict[str, tuple[str, float]] = {}
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._deadline = float("inf")  # loop time by which a shutdown flush gives up
        self._failing = False

    # -- sink (on the event loop: never blocks, never raises) --

    def __call__(self, event: AlertEvent) -> None:
        try:
            incident = event.incident
            if event.state != "open":
                self._posted_seen.pop(incident.alert_id, None)
            queued = self._queue(
                Outgoing(
                    incident.alert_id,
                    event.state,
                    build_alert(incident, event.state, self._clock(), self.options),
                    check_owner=event.state == "resolved" and incident.resolve_reason == "stale",
                )
            )
            if queued and event.state == "open":
                self._posted_seen[incident.alert_id] = (incident.sensor_id, incident.last_seen)
        except Exception:  # a sink must not break scoring
            log.exception("alertmanager sink failed")

    def _queue(self, item: Outgoing) -> bool:
        if self._closing.is_set() and self._deadline < asyncio.get_running_loop().time():
            self.metrics.dropped.labels("shutdown").inc()
            return False
        if not self.outbox.put(item):
            self.metrics.dropped.labels("queue_full").inc()
            return False
        self._wake.set()
        return True

    # -- lifecycle --

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._deliver_forever(), name="alertmanager-deliver"),
            asyncio.create_task(self._resend_forever(), name="alertmanager-resend"),
        ]
        log.info(
            "alertmanager sender started",
            extra={
                "alertmanager": self.transport_base,
                "resend_seconds": self.options.resend_seconds,
            },
        )

    @property
    def transport_base(self) -> str:
        return getattr(self.transport, "base", "")

    async def stop(self) -> None:
        """Deliver what is queued within `flush_seconds`, then stop; the rest is dropped."""
        if not self._tasks:
            return
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + self.options.flush_seconds
        self._closing.set()
        self._wake.set()
        deliver, resend = self._tasks
        resend.cancel()
        # A request already in flight may outlast the deadline by its timeout: it is
        # abandoned (its alerts counted as dropped), its thread ends on its own.
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(asyncio.shield(deliver), self.options.flush_seconds + 0.1)
        deliver.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if left := len(self.outbox):
            self.metrics.dropped.labels("shutdown").inc(left)
            self.outbox.take(left)
            log.warning("alertmanager: %d alerts not delivered before shutdown", left)

    # -- delivery --

    async def _deliver_forever(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            if not self.outbox:
                if self._closing.is_set():
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if self._closing.is_set() and loop.time() >= self._deadline:
                return
            items = self.outbox.take(MAX_BATCH_ALERTS)
            timeout = self.options.timeout_seconds
            if self._closing.is_set():
                timeout = max(0.05, min(timeout, self._deadline - loop.time()))
            try:
                await asyncio.to_thread(self._deliver, items, timeout)
            except DeliveryError as exc:
                self.metrics.failed.inc()
                if not exc.retry:
                    self.metrics.dropped.labels("rejected").inc(len(items))
                    log.error(
                        "alertmanager refused %d alerts: %s",
                        len(items),
                        exc,
                        extra={"alertmanager": self.transport_base},
                    )
                    continue
                if dropped := self.outbox.requeue(items):
                    self.metrics.dropped.labels("queue_full").inc(dropped)
                if not self._failing:
                    self._failing = True
                    log.warning(
                        "alertmanager unreachable, retrying with backoff: %s",
                        exc,
                        extra={"alertmanager": self.transport_base, "queued": len(self.outbox)},
                    )
                failures += 1
                delay = min(
                    self.options.max_backoff_seconds,
                    self.options.backoff_seconds * 2 ** min(failures - 1, 30),
                )
                delay *= random.uniform(0.8, 1.0)  # replicas restarting together spread out
                if self._closing.is_set():
                    await asyncio.sleep(min(delay, 0.1))  # flushing: keep trying until deadline
                else:
                    with contextlib.suppress(TimeoutError):  # a shutdown cuts the wait short
                        await asyncio.wait_for(self._closing.wait(), delay)
            except asyncio.CancelledError:
                self.outbox.requeue(items)
                raise
            else:
                failures = 0
                if self._failing:
                    self._failing = False
                    log.info(
                        "alertmanager reachable again", extra={"alertmanager": self.transport_base}
                    )

    def _deliver(self, items: Sequence[Outgoing], timeout: float) -> None:
        """(worker thread) Check ownership of stale resolutions, then POST the rest. Raises
        DeliveryError with nothing counted, so the whole batch can be retried."""
        post: list[Outgoing] = []
        skipped: list[Outgoing] = []
        for item in items:
            if item.check_owner and self._owned_elsewhere(item, timeout):
                skipped.append(item)
            else:
                post.append(item)
        if post:
            self.transport.post([item.alert for item in post], timeout)
        for item in post:
            self.metrics.sent.labels(item.state).inc()
        for item in skipped:
            self.metrics.handover_skipped.inc()
            log.info(
                "alertmanager: stale resolution not posted, another replica reported the sensor",
                extra={"sensor_id": item.alert["labels"]["sensor_id"], "alert_id": item.alert_id},
            )

    def _owned_elsewhere(self, item: Outgoing, timeout: float) -> bool:
        active = self.transport.active_alert_ids(item.alert["labels"], timeout)
        return bool(active - {item.alert_id, ""})

    # -- re-sending open incidents --

    async def _resend_forever(self) -> None:
        while True:
            await asyncio.sleep(self.options.resend_seconds)
            await self.resend()

    async def resend(self) -> int:
        """Queue the open incidents whose sensor sent readings here since they were last
        queued; returns how many. (The others' endsAt already covers them until stale.)"""
        queued = 0
        for count, incident in enumerate(self.incidents.open_incidents(), start=1):
            if count % 1_000 == 0:
                await asyncio.sleep(0)  # 100,000 open incidents must not stall ingest
            if incident.resolve_reason:
                continue  # resolved while we yielded; its resolution is queued
            posted = self._posted_seen.get(incident.alert_id)
            if posted is not None and incident.last_seen <= posted[1]:
                continue
            pending = self.outbox.get(incident.alert_id)
            if pending is not None and pending.state != "open":
                continue
            alert = build_alert(incident, "open", self._clock(), self.options)
            if self._queue(Outgoing(incident.alert_id, "open", alert)):
                self._posted_seen[incident.alert_id] = (incident.sensor_id, incident.last_seen)
                queued += 1
        # Forget incidents closed without a resolution (the tracker's max_open bound).
        for alert_id, (sensor, _) in list(self._posted_seen.items()):
            current = self.incidents.open_incident(sensor)
            if current is None or current.alert_id != alert_id:
                del self._posted_seen[alert_id]
        return queued
