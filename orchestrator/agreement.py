"""Row-by-row agreement of a specialist's vote and its shadow's on the same rows. Pure numpy.

A row is compared when both engines voted on it (neither was warming up). Scores are compared as
the combiner reads them: NaN as 0, clipped to [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .combine import EngineVotes


@dataclass(frozen=True, slots=True)
class Agreement:
    compared: int  # rows both voted on
    both: int  # compared rows both flagged
    only_primary: int  # compared rows only the specialist flagged
    only_shadow: int  # compared rows only the shadow flagged
    differences: np.ndarray  # float64 [compared]: shadow score minus specialist score


def compare(primary: EngineVotes, shadow: EngineVotes) -> Agreement:
    """How `shadow` voted on the rows `primary` voted on (both calibrated, same batch)."""
    compared = ~primary.warming_up & ~shadow.warming_up
    flagged_primary = primary.anomalies & compared
    flagged_shadow = shadow.anomalies & compared
    return Agreement(
        compared=int(compared.sum()),
        both=int((flagged_primary & flagged_shadow).sum()),
        only_primary=int((flagged_primary & ~flagged_shadow).sum()),
        only_shadow=int((flagged_shadow & ~flagged_primary).sum()),
        differences=_as_read(shadow.scores[compared]) - _as_read(primary.scores[compared]),
    )


def _as_read(scores: np.ndarray) -> np.ndarray:
    return np.clip(np.nan_to_num(scores, nan=0.0), 0.0, 1.0)
