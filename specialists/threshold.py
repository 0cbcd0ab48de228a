"""Threshold engine: per-sensor low/high limits chosen by glob patterns on sensor ids.

Limits come from a TOML file:

    [[rule]]
    pattern = "boiler-*"     # fnmatch glob on the sensor id; first matching rule wins
    high = 120.0             # optional; omitted = no upper limit
    low = -10.0              # optional; omitted = no lower limit

Sensors no rule matches get the default rule: high 90.0, no low limit (the original
Sentinel's rule). A value equal to a limit is inside it.
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

from .engine import ScoreInput, ScoreOutput, ratio_score

DEFAULT_HIGH = 90.0
ENGINE_VERSION = "1.0.0"


@dataclass(frozen=True, slots=True)
class LimitRule:
    pattern: str
    low: float = -math.inf
    high: float = math.inf

    def __post_init__(self) -> None:
        if not self.pattern:
            raise ValueError("rule pattern must not be empty")
        if math.isnan(self.low) or math.isnan(self.high) or self.low > self.high:
            raise ValueError(
                f"rule {self.pattern!r}: need low <= high, got {self.low}..{self.high}"
            )


DEFAULT_RULE = LimitRule(pattern="*", high=DEFAULT_HIGH)


def load_rules(path: Path) -> list[LimitRule]:
    """Parse a TOML limits file; errors name the rule index and the field."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    rules = []
    for index, raw in enumerate(data.get("rule", [])):
        unknown = set(raw) - {"pattern", "low", "high"}
        if unknown:
            raise ValueError(f"{path}: rule[{index}] has unknown keys {sorted(unknown)}")
        if "pattern" not in raw:
            raise ValueError(f"{path}: rule[{index}] needs a pattern")
        rules.append(
            LimitRule(
                pattern=str(raw["pattern"]),
                low=float(raw.get("low", -math.inf)),
                high=float(raw.get("high", math.inf)),
            )
        )
    return rules


class ThresholdEngine:
    """Scores each latest value against its sensor's limits; needs no history."""

    name = "threshold"
    window_length = 0

    def __init__(self, rules: list[LimitRule] | None = None, cache_size: int = 100_000) -> None:
        self._rules = [*(rules or []), DEFAULT_RULE]
        self._cache: OrderedDict[str, LimitRule] = OrderedDict()
        self._cache_size = cache_size
        self.version = ENGINE_VERSION

    def parameters(self) -> Mapping[str, str]:
        return {
            "rules": "; ".join(f"{r.pattern}: [{r.low}, {r.high}]" for r in self._rules),
        }

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
        unique_ids, inverse = np.unique(
            np.asarray(batch.sensor_ids, dtype=object), return_inverse=True
        )
        rules = [self.rule_for(s) for s in unique_ids]
        low = np.array([r.low for r in rules])[inverse]
        high = np.array([r.high for r in rules])[inverse]
        values = batch.values
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
        scores = np.where(anomalies, outside_score, inside_score)
        reasons = [""] * rows
        for i in np.flatnonzero(anomalies):
            rule = rules[inverse[i]]
            if above[i]:
                reasons[i] = (
                    f"value {values[i]:g} above high limit {rule.high:g} (rule '{rule.pattern}')"
                )
            else:
                reasons[i] = (
                    f"value {values[i]:g} below low limit {rule.low:g} (rule '{rule.pattern}')"
                )
        return ScoreOutput(
            scores=np.clip(scores, 0.0, 1.0),
            anomalies=anomalies,
            reasons=reasons,
            warming_up=np.zeros(rows, dtype=bool),
        )


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
        reasons=[],
        warming_up=np.empty(0, dtype=bool),
    )
