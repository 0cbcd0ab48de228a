"""Everything the orchestrator remembers per sensor, sized by what the engines declare.

- the raw window (the longest `window_length` any engine asks for),
- the long-range views engines declare (`views.py`),
- one anomaly-likelihood calibrator per engine channel (`calibration.py`),
all in arrays indexed by the window store's slots, so eviction of a sensor frees all of it.
A declaration that would take a sensor's memory over `max_bytes_per_sensor`, or a view over
the limits, is refused: that specialist is left out (its verdicts are `degraded`) and the
refusal names the view.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from enum import Enum
from typing import Any

import numpy as np

from .budget import RoundLayout
from .calibration import (
    Calibrated,
    CalibrationBank,
    CalibrationParams,
    ChannelKey,
    SensorRuns,
    likelihood_score,
)
from .combine import EngineVotes
from .views import HistoryViews, RangeSpec, RangeView, SeasonalSpec, SeasonalView
from .windows import BatchWindows, SlotState, WindowStore

log = logging.getLogger(__name__)

RAW_BYTES = 4  # float32 raw windows
FIXED_SLOT_BYTES = 16  # fill and generation counters
MAX_RANGE_BLOCK = 32_767  # readings per RANGE block (counted in an int16)


@dataclass(frozen=True, slots=True)
class ChannelDecl:
    standardize: bool
    flag_below: float


class RowColumn(Enum):
    """A per-row column of Score requests besides values, windows and views."""

    SENSOR_IDS = "sensor_ids"
    TIMESTAMPS = "timestamps"


@dataclass(frozen=True, slots=True)
class Declaration:
    """What one described specialist needs kept per sensor, and which row columns it reads."""

    window_length: int
    views: Mapping[str, RangeSpec | SeasonalSpec]
    channels: Mapping[str, ChannelDecl]
    # None: an engine predating the declaration, sent every row column in per-row form.
    row_columns: frozenset[RowColumn] | None = None


@dataclass(frozen=True, slots=True)
class HistoryLimits:
    max_window_length: int = 4096
    max_range_blocks: int = 1024
    max_seasonal_buckets: int = 4096
    max_bytes_per_sensor: int = 4096


class DeclarationRefused(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class HistorySnapshot:
    """Per-sensor state copied out of a History (least recently seen sensor first)."""

    meta: dict  # JSON-able: declarations, view specs, channel columns, calibration settings
    sensor_ids: list[str]
    arrays: dict[str, np.ndarray]  # "<part>/<field>": [sensors, ...]


def _gather(
    prefix: str, state: SlotState | WindowStore, slots: np.ndarray
) -> dict[str, np.ndarray]:
    return {f"{prefix}/{name}": getattr(state, name)[slots] for name in state.SLOT_FIELDS}


def _scatter(
    prefix: str,
    state: SlotState | WindowStore,
    slots: np.ndarray,
    arrays: Mapping[str, np.ndarray],
    kept: int,
    columns: Sequence[tuple[int, int]] | None = None,
) -> None:
    """Load saved per-sensor arrays (the last `kept` rows) into `state` at `slots`."""
    for name in state.SLOT_FIELDS:
        saved = arrays[f"{prefix}/{name}"][-kept:] if kept else arrays[f"{prefix}/{name}"][:0]
        target = getattr(state, name)
        if columns is None:
            target[slots] = saved
        else:
            for old, new in columns:
                target[slots, new] = saved[:, old]


def _view_of(spec: RangeSpec | SeasonalSpec) -> RangeView | SeasonalView:
    return RangeView(spec) if isinstance(spec, RangeSpec) else SeasonalView(spec)


def _spec_of(fields: Mapping[str, Any]) -> RangeSpec | SeasonalSpec:
    fields = dict(fields)
    kind = fields.pop("kind")
    if kind == "RangeSpec":
        return RangeSpec(**fields)
    if kind == "SeasonalSpec":
        return SeasonalSpec(**fields)
    raise ValueError(f"unknown view kind {kind!r}")


class History:
    def __init__(
        self,
        windows: WindowStore,
        limits: HistoryLimits | None = None,
        calibration: CalibrationParams | None = None,
        flag_below: Mapping[str, float] | None = None,
    ) -> None:
        self.windows = windows
        self.limits = limits or HistoryLimits()
        self.calibration = calibration or CalibrationParams()
        self.views = HistoryViews()
        self.flag_below_overrides = dict(flag_below or {})
        # (specialist, view name) -> internal view name; specialist -> its channels.
        self._view_names: dict[str, dict[str, str]] = {}
        self._next_view = 0
        self.channels: dict[ChannelKey, Calibrated] = {}
        self.bank = CalibrationBank(self.calibration)
        windows.attach(self.bank)

    def bytes_per_sensor(self) -> int:
        return (
            FIXED_SLOT_BYTES
            + RAW_BYTES * self.windows.length
            + self.views.bytes_per_sensor()
            + self.calibration.bytes_per_channel * len(self.channels)
        )

    def round_layout(self) -> RoundLayout:
        """What a scoring round copies per reading with the engines declared now."""
        return RoundLayout(
            window_bytes=RAW_BYTES * self.windows.length,
            view_bytes=8 * sum(view.spec.width for view in self.views.views.values()),
        )

    def check(self, specialist: str, declaration: Declaration) -> None:
        """Raise DeclarationRefused (naming the view or channel) if it does not fit."""
        limits = self.limits
        if declaration.window_length > limits.max_window_length:
            raise DeclarationRefused(
                f"window_length {declaration.window_length} exceeds max_window_length "
                f"{limits.max_window_length}"
            )
        extra = 0
        for index, (name, spec) in enumerate(declaration.views.items()):
            where = f"views[{index}] {name!r}"
            if isinstance(spec, RangeSpec):
                if spec.block < 1 or spec.readings < 1:
                    raise DeclarationRefused(f"{where}: readings and block must be >= 1")
                if spec.block > MAX_RANGE_BLOCK:
                    # RangeView counts a block's readings in an int16.
                    raise DeclarationRefused(
                        f"{where}: block {spec.block} exceeds the limit of {MAX_RANGE_BLOCK}"
                    )
                if spec.blocks > limits.max_range_blocks:
                    raise DeclarationRefused(
                        f"{where}: {spec.blocks} blocks exceed the limit of "
                        f"{limits.max_range_blocks}"
                    )
            else:
                if not (spec.period_seconds > 0 and spec.bucket_seconds > 0):
                    raise DeclarationRefused(f"{where}: period and bucket must be positive")
                if spec.smoothing < 1 or spec.smoothing > limits.max_window_length:
                    raise DeclarationRefused(f"{where}: smoothing {spec.smoothing} out of range")
                if spec.period_seconds / spec.bucket_seconds + spec.tolerance + 1 > (
                    limits.max_seasonal_buckets
                ):
                    raise DeclarationRefused(
                        f"{where}: {spec.buckets} buckets exceed the limit of "
                        f"{limits.max_seasonal_buckets}"
                    )
                if spec.tolerance >= spec.lag:
                    # Else the search around one period back reaches the row's own bucket.
                    raise DeclarationRefused(
                        f"{where}: tolerance {spec.tolerance} must be below the {spec.lag} "
                        "buckets of one period"
                    )
            if not any(v.spec == spec for v in self.views.views.values()):
                extra += spec.bytes_per_sensor
        for index, (name, channel) in enumerate(declaration.channels.items()):
            if not 0.0 < channel.flag_below < 1.0:
                raise DeclarationRefused(
                    f"channels[{index}] {name!r}: flag_below must be in (0, 1), "
                    f"got {channel.flag_below}"
                )
            if ChannelKey(specialist, name) not in self.channels:
                extra += self.calibration.bytes_per_channel
        length = max(self.windows.length, declaration.window_length)
        total = self.bytes_per_sensor() + RAW_BYTES * (length - self.windows.length) + extra
        if total > limits.max_bytes_per_sensor:
            raise DeclarationRefused(
                f"views and channels need {total} bytes per sensor, over the budget of "
                f"{limits.max_bytes_per_sensor} (max_history_bytes_per_sensor)"
            )

    def declare(self, specialist: str, declaration: Declaration) -> None:
        """Start keeping what `specialist` declared (after `check`). Existing history stays;
        a view whose spec changed starts afresh."""
        smoothing = max(
            (s.smoothing for s in declaration.views.values() if isinstance(s, SeasonalSpec)),
            default=0,
        )
        self.windows.grow_length(max(declaration.window_length, smoothing - 1))
        names: dict[str, str] = {}
        for name, spec in declaration.views.items():
            # Reuse a view with the same spec (this engine's, or another's): its history stays.
            internal = next((k for k, v in self.views.views.items() if v.spec == spec), None)
            if internal is None:
                internal = self._add_view(f"{specialist}/{name}", spec)
            names[name] = internal
        self._view_names[specialist] = names
        # Views no engine reads any more (a re-described engine changed its spec) are freed.
        used = {internal for kept in self._view_names.values() for internal in kept.values()}
        for internal in [k for k in self.views.views if k not in used]:
            self.windows.detach(self.views.views.pop(internal))
        for name, channel in declaration.channels.items():
            key = ChannelKey(specialist, name)
            flag_below = self.flag_below_overrides.get(str(key), channel.flag_below)
            existing = self.channels.get(key)
            if existing is None:
                index = self.bank.add_channel(channel.standardize)
                self.channels[key] = Calibrated(index, channel.standardize, flag_below)
                continue
            existing.flag_below = flag_below
            if existing.standardize != channel.standardize:
                self.bank.clear_channel(existing.index, channel.standardize)
                existing.standardize = channel.standardize

    def _add_view(self, label: str, spec: RangeSpec | SeasonalSpec) -> str:
        """Start keeping a new view (attached to the window store); returns its internal name."""
        internal = f"{label}/{self._next_view}"
        self._next_view += 1
        view = _view_of(spec)
        self.windows.attach(view)
        self.views.views[internal] = view
        return internal

    # -- checkpoints ------------------------------------------------------------------------
    def snapshot(self) -> HistorySnapshot:
        """A copy of every sensor's history, views and calibration, with what they mean."""
        sensor_ids, slots = self.windows.live()
        arrays = _gather("window", self.windows, slots)
        for internal, view in self.views.views.items():
            arrays.update(_gather(f"view/{internal}", view, slots))
        arrays.update(_gather("calibration", self.bank, slots))
        meta = {
            "window_length": self.windows.length,
            "views": {
                internal: {"kind": type(view.spec).__name__, **asdict(view.spec)}
                for internal, view in self.views.views.items()
            },
            "view_names": self._view_names,
            "channels": [
                {
                    "specialist": key.specialist,
                    "channel": key.channel,
                    "index": c.index,
                    "standardize": c.standardize,
                    "flag_below": c.flag_below,
                }
                for key, c in self.channels.items()
            ],
            "calibration": asdict(self.calibration),
        }
        return HistorySnapshot(meta, sensor_ids, arrays)

    def validate(self, snapshot: HistorySnapshot) -> None:
        """Raise ValueError naming the first array or record that this history could not load
        (so that a checkpoint is refused whole rather than half-loaded)."""
        meta, arrays = snapshot.meta, snapshot.arrays
        try:
            specs = {name: _spec_of(fields) for name, fields in meta["views"].items()}
            channels = meta["channels"]
            for channel in channels:
                ChannelKey(str(channel["specialist"]), str(channel["channel"]))
                int(channel["index"]), bool(channel["standardize"]), float(channel["flag_below"])
            for names in meta["view_names"].values():
                if not set(names.values()) <= set(specs):
                    raise ValueError("view_names refer to an unknown view")
            length = int(meta["window_length"])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"history metadata: {error!r}") from error
        bank = CalibrationBank(self.calibration)
        for channel in channels:
            bank.add_channel(bool(channel["standardize"]))
        expected: dict[str, SlotState | WindowStore] = {
            "window": WindowStore(length, 1),
            "calibration": bank,
        }
        for name, spec in specs.items():
            expected[f"view/{name}"] = _view_of(spec)
        for prefix, state in expected.items():
            if not isinstance(state, WindowStore):  # a store has its slots already
                state.grow(1)
            for field in state.SLOT_FIELDS:
                key = f"{prefix}/{field}"
                if key not in arrays:
                    raise ValueError(f"array {key!r} is missing")
                want, got = getattr(state, field), arrays[key]
                if got.shape[1:] != want.shape[1:] or got.dtype != want.dtype:
                    raise ValueError(
                        f"array {key!r} is {got.dtype}{list(got.shape[1:])}, "
                        f"expected {want.dtype}{list(want.shape[1:])}"
                    )

    def restore(self, snapshot: HistorySnapshot) -> int:
        """Load a snapshot into this (empty) history before any traffic; returns the sensors
        restored. The declarations it was taken under are re-made, so a specialist that
        describes itself the same way again keeps this history; one that changed a view or
        a channel starts that afresh (as on any re-described engine)."""
        meta, arrays = snapshot.meta, snapshot.arrays
        if self.views.views or self.channels or self.windows.sensors:
            raise RuntimeError("restore needs an empty history")
        specs = {name: _spec_of(fields) for name, fields in meta["views"].items()}
        self.windows.grow_length(int(meta["window_length"]))
        internal_names: dict[str, str] = {}
        for saved, spec in specs.items():
            internal_names[saved] = self._add_view("restored", spec)
        self._view_names = {
            specialist: {name: internal_names[saved] for name, saved in names.items()}
            for specialist, names in meta["view_names"].items()
        }
        columns = []  # (saved column, restored column)
        for channel in sorted(meta["channels"], key=lambda c: c["index"]):
            key = ChannelKey(channel["specialist"], channel["channel"])
            index = self.bank.add_channel(bool(channel["standardize"]))
            flag_below = self.flag_below_overrides.get(str(key), float(channel["flag_below"]))
            self.channels[key] = Calibrated(index, bool(channel["standardize"]), flag_below)
            columns.append((int(channel["index"]), index))
        slots = self.windows.restore(
            snapshot.sensor_ids, arrays["window/_values"], arrays["window/_fill"]
        )
        kept = len(slots)
        for saved, internal in internal_names.items():
            _scatter(f"view/{saved}", self.views.views[internal], slots, arrays, kept)
        if meta["calibration"] == asdict(self.calibration):
            _scatter("calibration", self.bank, slots, arrays, kept, columns)
        else:
            log.warning(
                "checkpoint calibration state not restored: calibration settings changed",
                extra={"saved": meta["calibration"], "now": asdict(self.calibration)},
            )
        return kept

    def views_for(self, specialist: str, views: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The batch's view values that `specialist` declared, under its own names."""
        # A view declared after this batch's history was taken is absent: the engine's views
        # then do not match its declaration and it sits this batch out (see fan_out).
        return {
            name: views[internal]
            for name, internal in self._view_names.get(specialist, {}).items()
            if internal in views
        }

    def append(
        self, sensor_ids: Sequence[str], values: np.ndarray, timestamps: np.ndarray
    ) -> tuple[BatchWindows, dict[str, np.ndarray]]:
        """The batch's windows and view values (each row's history before it)."""
        stored = self.windows.append(sensor_ids, values)
        return stored, self.views.update(stored, values, timestamps)

    def calibrate(self, stored: BatchWindows, votes: Sequence[EngineVotes]) -> list[EngineVotes]:
        """Votes with every channel's likelihood applied: a row is flagged by an engine if the
        engine flagged it or one of its channels' likelihood is below the threshold."""
        if not votes:
            return []
        current = self.windows.current(stored.slots, stored.generation)
        rows = stored.slots.shape[0]
        # Every declared channel's raw values as one [rows, channels] matrix, so each reading
        # depth is one pass of the bank over all channels.
        raw = np.full((rows, self.bank.channels), np.nan)
        used: list[tuple[int, str, int]] = []  # (vote index, channel name, bank column)
        for v, vote in enumerate(votes):
            judged = current & ~vote.warming_up
            for name, values in vote.channels.items():
                calibrated = self.channels.get(ChannelKey(vote.name, name))
                if calibrated is None:
                    continue
                raw[:, calibrated.index] = np.where(judged, values, np.nan)
                used.append((v, name, calibrated.index))
        if used:
            runs = SensorRuns.grouped(
                stored.order, stored.group, stored.rank, stored.counts, stored.sensor_slots
            )
            q = self.bank.run_by_sensor(raw, runs).likelihood()
        else:
            q = np.full(raw.shape, np.nan)
        out = []
        for v, vote in enumerate(votes):
            mine = [(name, column) for w, name, column in used if w == v]
            if not mine:
                out.append(vote)
                continue
            likelihood = np.ones(rows)
            score = np.where(vote.anomalies, vote.scores, 0.0)
            flagged = vote.anomalies.copy()
            judged = ~vote.warming_up & vote.anomalies
            reasons = dict(vote.reasons)
            for name, column in mine:
                flag_below = self.channels[ChannelKey(vote.name, name)].flag_below
                ready = np.isfinite(q[:, column])
                judged |= ready
                channel_q = np.where(ready, q[:, column], 1.0)
                hit = channel_q < flag_below
                likelihood = np.minimum(likelihood, channel_q)
                score = np.maximum(score, likelihood_score(channel_q, flag_below))
                for row in np.flatnonzero(hit).tolist():
                    note = f"{name} likelihood {channel_q[row]:.3g} < {flag_below:g}"
                    said = reasons.get(row)
                    reasons[row] = f"{said}; {note}" if said else note
                flagged |= hit
            out.append(
                replace(
                    vote,
                    scores=score,
                    anomalies=flagged,
                    warming_up=~judged,
                    reasons=reasons,
                    likelihood=likelihood,
                )
            )
        return out
