"""Threshold engine: the user's hard limits plus adaptive limits from each sensor's recent range.

Hard limits come from a TOML file:

    [[rule]]
    pattern = "boiler-*"     # fnmatch glob on the sensor id; first matching rule wins
    high = 120.0             # optional; omitted = no upper limit
    low = -10.0              # optional; omitted = no lower limit
    adaptive = true          # optional; false = no adaptive limits for these sensors

A sensor no rule matches has no hard limit. A value equal to a limit is inside it.

Adaptive limits ("a new extreme"): with hi/lo the max/min of about the last
`adaptive_readings` values (the orchestrator's RANGE view) and r = hi - lo, a value above
hi + margin * r or below lo - margin * r is anomalous, once `adaptive_min_history` values were
seen and r > 0. The limits follow the sensor: a series that lives above 90 is normal there.
"""

from __future__ import annotations

import fnmatch
import math
import tomllib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sentinel.errors import InvalidArgument

from .engine import ChannelSpec, RangeViewSpec, RowColumn, ScoreInput, ScoreOutput, ratio_score

ENGINE_VERSION = "2.0.0"
RANGE_VIEW = "range"


@dataclass(frozen=True, slots=True)
class LimitRule:
    pattern: str
    low: float = -math.inf
    high: float = math.inf
    adaptive: bool = True

    def __post_init__(self) -> None:
        if not self.pattern:
            raise ValueError("rule pattern must not be empty")
        if math.isnan(self.low) or math.isnan(self.high) or self.low > self.high:
            raise ValueError(
                f"rule {self.pattern!r}: need low <= high, got {self.low}..{self.high}"
            )


NO_RULE = LimitRule(pattern="*")


@dataclass(frozen=True, slots=True)
class AdaptiveLimits:
    margin: float = 0.05
    """Beyond the recent range by more than this fraction of it is a new extreme."""
    readings: int = 1000
    """Recent values the range covers."""
    block: int = 16
    """Values per block of the range view (memory: 8 bytes per block and sensor)."""
    min_history: int = 150
    """Values a sensor needs before its adaptive limits apply."""

    def __post_init__(self) -> None:
        if not (self.margin >= 0 and self.readings >= 1 and self.block >= 1):
            raise ValueError("adaptive limits need margin >= 0, readings >= 1, block >= 1")


def load_rules(path: Path) -> list[LimitRule]:
    """Parse a TOML limits file; errors name the rule index and the field."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    rules = []
    for index, raw in enumerate(data.get("rule", [])):
        unknown = set(raw) - {"pattern", "low", "high", "adaptive"}
        if unknown:
            raise ValueError(f"{path}: rule[{index}] has unknown keys {sorted(unknown)}")
        if "pattern" not in raw:
            raise ValueError(f"{path}: rule[{index}] needs a pattern")
        rules.append(
            LimitRule(
                pattern=str(raw["pattern"]),
                low=float(raw.get("low", -math.inf)),
                high=float(raw.get("high", math.inf)),
                adaptive=bool(raw.get("adaptive", True)),
            )
        )
    return rules


class ThresholdEngine:
    """Scores each latest value against its sensor's hard and adaptive limits."""

    name = "threshold"
    window_length = 0
    channels: tuple[ChannelSpec, ...] = ()
    row_columns = frozenset({RowColumn.SENSOR_IDS})  # rules match sensor ids

    def __init__(
        self,
        rules: list[LimitRule] | None = None,
        adaptive: AdaptiveLimits | None = None,
        cache_size: int = 100_000,
    ) -> None:
        self._rules = [*(rules or []), NO_RULE]
        self.adaptive = adaptive
        self._cache: OrderedDict[str, LimitRule] = OrderedDict()
        self._cache_size = cache_size
        self.version = ENGINE_VERSION
        self.views = (
            (RangeViewSpec(RANGE_VIEW, adaptive.readings, adaptive.block),) if adaptive else ()
        )

    def parameters(self) -> Mapping[str, str]:
        parameters = {
            "rules": "; ".join(
                f"{r.pattern}: [{r.low}, {r.high}]" for r in self._rules if r is not NO_RULE
            )
            or "none",
        }
        if self.adaptive:
            a = self.adaptive
            parameters["adaptive"] = (
                f"margin {a.margin:g} of the range of the last {a.readings} values "
                f"(after {a.min_history})"
            )
        return parameters

    def rule_for(self, sensor_id: str) -> LimitRule:
        rule = self._cache.get(sensor_id)
        if rule is None:
            rule = next(r for r in self._rules if fnmatch.fnmatchcase(sensor_id, r.pattern))
            self._cache[sensor_id] = rule
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return rule

    def score(self, batch: ScoreInput) -> ScoreOutput:
        rows = batch.rows
        if rows == 0:
            return _empty_output()
        # Pattern matching happens once per distinct sensor, then broadcasts to rows.
        if batch.sensors is None or batch.sensor_index is None:
            raise InvalidArgument("sensors", "threshold reads sensor ids; none were sent")
        inverse = batch.sensor_index
        rules = [self.rule_for(s) for s in batch.sensors]
        low = np.array([r.low for r in rules])[inverse]
        high = np.array([r.high for r in rules])[inverse]
        values = batch.values
        has_rule = np.array([r is not NO_RULE for r in rules])[inverse]
        above = values > high
        below = values < low
        excess = np.where(above, values - high, np.where(below, low - values, 0.0))
        # Scale an excess by the rule's span (or the limit's magnitude) so scores are unitless.
        span = _limit_span(low, high)
        anomalies = above | below
        # Outside: 0.5 and up with the excess. Inside: below 0.5, rising towards the nearer limit.
        outside_score = 0.5 + 0.5 * ratio_score(excess / span, 0.1)
        headroom = np.minimum(high - values, values - low)
        inside_score = 0.499 * (1.0 - np.clip(headroom / span, 0.0, 1.0))
        scores = np.where(anomalies, outside_score, np.where(has_rule, inside_score, 0.0))
        judged = has_rule.copy()

        new_high = new_low = np.zeros(rows, dtype=bool)
        if self.adaptive is not None:
            use = np.array([r.adaptive for r in rules])[inverse]
            new_high, new_low, adaptive_score, ready = self._adaptive(batch, use)
            judged |= ready
            scores = np.maximum(scores, adaptive_score)
            anomalies = anomalies | new_high | new_low

        reasons: dict[int, str] = {}
        for i in np.flatnonzero(anomalies).tolist():
            rule = rules[inverse[i]]
            if above[i]:
                reasons[i] = (
                    f"value {values[i]:g} above high limit {rule.high:g} (rule '{rule.pattern}')"
                )
            elif below[i]:
                reasons[i] = (
                    f"value {values[i]:g} below low limit {rule.low:g} (rule '{rule.pattern}')"
                )
            else:
                view = batch.views[RANGE_VIEW][i]
                side = "above the recent high" if new_high[i] else "below the recent low"
                reasons[i] = (
                    f"value {values[i]:g} {side} (range {view[1]:g}..{view[0]:g} "
                    f"over {int(view[2])} values)"
                )
        return ScoreOutput(
            scores=np.clip(scores, 0.0, 1.0),
            anomalies=anomalies,
            reasons=reasons,
            warming_up=~judged,
        )

    def _adaptive(
        self, batch: ScoreInput, use: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(new high, new low, score, judged) per row from the RANGE view."""
        a = self.adaptive
        assert a is not None
        view = batch.views[RANGE_VIEW]
        if view.shape[1] != 3:
            raise InvalidArgument("views", f"view {RANGE_VIEW!r} must have 3 columns")
        high, low, count = view[:, 0], view[:, 1], view[:, 2]
        values = batch.values
        with np.errstate(invalid="ignore"):
            spread = high - low
            ready = use & (count >= a.min_history) & np.isfinite(spread)
            margin = a.margin * spread
            new_high = ready & (spread > 0) & (values > high + margin)
            new_low = ready & (spread > 0) & (values < low - margin)
            beyond = np.where(new_high, values - high, np.where(new_low, low - values, 0.0))
            unit = np.where(spread > 0, spread, 1.0)
            # 0.5 exactly on an adaptive limit, rising with the distance beyond the range.
            score = np.where(
                new_high | new_low,
                np.maximum(0.5, ratio_score(beyond / unit, max(a.margin, 1e-9))),
                0.0,
            )
        return new_high, new_low, np.where(ready, score, 0.0), ready


def _limit_span(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Unit for excess/headroom: the rule's span, or the one limit's magnitude (at least 1)."""
    one_sided = np.maximum(np.abs(np.where(np.isfinite(high), high, low)), 1.0)
    with np.errstate(invalid="ignore"):
        span = np.where(np.isfinite(high - low), high - low, one_sided)
    # A rule without any limit has an infinite span: use 1 so headroom/span is inf, not NaN.
    return np.where((span > 0) & np.isfinite(span), span, 1.0)


def _empty_output() -> ScoreOutput:
    return ScoreOutput(
        scores=np.empty(0),
        anomalies=np.empty(0, dtype=bool),
        reasons={},
        warming_up=np.empty(0, dtype=bool),
    )
