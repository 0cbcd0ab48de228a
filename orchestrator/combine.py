"""Combine specialist votes into one verdict per reading. Pure numpy, no gRPC.

Only *voting* engines count for a row: those that answered and were not warming up.
- `any` (default): anomalous if any voter says so; score = the highest voter score.
- `majority`: anomalous if more than half of the voters say so; score = mean score.
- `weighted`: score = weighted mean of voter scores (per-specialist weights, default 1);
  anomalous when that score reaches 0.5 — every engine puts its own decision line at 0.5.
A row nobody voted on is not anomalous, with score 0. Status: `degraded` if a configured
specialist did not answer, else `warming_up` if an answering engine was warming up, else `ok`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np


class Policy(StrEnum):
    ANY = "any"
    MAJORITY = "majority"
    WEIGHTED = "weighted"


class Status(StrEnum):
    OK = "ok"
    DEGRADED = "degraded"
    WARMING_UP = "warming_up"


STATUS_CODES = {Status.OK: 0, Status.DEGRADED: 1, Status.WARMING_UP: 2}


@dataclass(frozen=True, slots=True)
class EngineVotes:
    """One specialist's answer for every row of a batch."""

    name: str
    version: str
    scores: np.ndarray
    anomalies: np.ndarray
    warming_up: np.ndarray
    # Why a row was flagged, by row; rows without a reason have no entry (most rows).
    reasons: Mapping[int, str]
    # Raw channel values (name -> float64 [rows]) before calibration.
    channels: Mapping[str, np.ndarray] = field(default_factory=dict)
    # Lowest calibrated likelihood per row (None: the engine has no calibrated channel).
    likelihood: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class Combined:
    anomaly: np.ndarray  # bool [rows]
    score: np.ndarray  # float64 [rows] in [0, 1]
    status: np.ndarray  # int8 [rows], codes of STATUS_CODES
    missing: tuple[str, ...]  # configured specialists that did not answer for this batch


@dataclass(frozen=True)
class Combiner:
    policy: Policy = Policy.ANY
    weights: Mapping[str, float] | None = None

    def weight(self, name: str) -> float:
        return float((self.weights or {}).get(name, 1.0))

    def combine(self, rows: int, votes: Sequence[EngineVotes], expected: Sequence[str]) -> Combined:
        answered = {v.name for v in votes}
        missing = tuple(name for name in expected if name not in answered)
        if votes:
            voting = np.stack([~v.warming_up for v in votes])  # [engines, rows]
            scores = np.stack([np.clip(v.scores, 0.0, 1.0) for v in votes]) * voting
            flags = np.stack([v.anomalies for v in votes]) & voting
            warming_any = (~voting).any(axis=0)
        else:
            voting = np.zeros((0, rows), dtype=bool)
            scores = np.zeros((0, rows))
            flags = np.zeros((0, rows), dtype=bool)
            warming_any = np.zeros(rows, dtype=bool)
        voters = voting.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            if self.policy is Policy.ANY:
                anomaly = flags.any(axis=0)
                score = scores.max(axis=0, initial=0.0)
            elif self.policy is Policy.MAJORITY:
                anomaly = 2 * flags.sum(axis=0) > voters
                score = np.where(voters > 0, scores.sum(axis=0) / voters, 0.0)
            else:
                w = np.array([self.weight(v.name) for v in votes], dtype=np.float64)[:, None]
                if w.size and w.max() > 0:
                    # Only ratios matter; scaling to max 1 keeps tiny weights from underflowing.
                    w = w / w.max()
                total = (w * voting).sum(axis=0)
                score = np.where(total > 0, (w * scores).sum(axis=0) / total, 0.0)
                anomaly = (score >= 0.5) & (total > 0)
        if missing:
            status = np.full(rows, STATUS_CODES[Status.DEGRADED], dtype=np.int8)
        else:
            status = np.where(
                warming_any, STATUS_CODES[Status.WARMING_UP], STATUS_CODES[Status.OK]
            ).astype(np.int8)
        return Combined(
            anomaly=anomaly & (voters > 0),
            score=np.clip(np.nan_to_num(score), 0.0, 1.0),
            status=status,
            missing=missing,
        )
