"""Row-by-row agreement of a specialist and its shadow (pure numpy), and the histogram that
takes the score differences a whole array at a time."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram
from sentinel.orchestrator.agreement import compare
from sentinel.orchestrator.combine import EngineVotes
from sentinel.orchestrator.metrics import DIFFERENCE_BUCKETS, ArrayHistogram


def votes(version: str, scores, anomalies, warming) -> EngineVotes:
    return EngineVotes(
        name="model",
        version=version,
        scores=np.asarray(scores, dtype=np.float64),
        anomalies=np.asarray(anomalies, dtype=bool),
        warming_up=np.asarray(warming, dtype=bool),
        reasons={},
    )


def test_only_rows_both_voted_on_are_compared() -> None:
    primary = votes("1", [0.9, 0.8, 0.1, 0.2, 0.7, 0.6], [1, 1, 0, 0, 1, 1], [0, 0, 0, 0, 1, 0])
    shadow = votes("2", [0.95, 0.3, 0.6, 0.1, 0.9, 0.9], [1, 0, 1, 0, 1, 1], [0, 0, 0, 0, 0, 1])
    agreement = compare(primary, shadow)
    # rows 4 (primary warming) and 5 (shadow warming) are not compared
    assert (agreement.compared, agreement.both, agreement.only_primary, agreement.only_shadow) == (
        4,
        1,
        1,
        1,
    )
    np.testing.assert_allclose(agreement.differences, [0.05, -0.5, 0.5, -0.1])


def test_scores_are_compared_as_the_combiner_reads_them() -> None:
    primary = votes("1", [0.5, 0.5, 0.5], [0, 0, 0], [0, 0, 0])
    shadow = votes("2", [np.nan, 7.0, -3.0], [0, 1, 0], [0, 0, 0])
    np.testing.assert_allclose(compare(primary, shadow).differences, [-0.5, 0.5, -0.5])


def test_array_histogram_exposes_what_a_histogram_fed_one_value_at_a_time_does() -> None:
    values = np.concatenate(
        [np.random.default_rng(3).uniform(-1, 1, 500), DIFFERENCE_BUCKETS, [np.nan]]
    )
    ours_registry, reference_registry = CollectorRegistry(), CollectorRegistry()
    ours = ArrayHistogram("diff", "d", ("specialist",), DIFFERENCE_BUCKETS, ours_registry)
    reference = Histogram("diff", "d", ("specialist",), buckets=DIFFERENCE_BUCKETS,
                          registry=reference_registry)  # fmt: skip
    ours.observe(("model",), values[:200])
    ours.observe(("model",), values[200:])
    for value in values[np.isfinite(values)].tolist():
        reference.labels("model").observe(value)

    def samples(registry: CollectorRegistry) -> dict:
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in registry.collect()
            for s in family.samples
            if s.name.endswith(("_bucket", "_count"))
        }

    assert samples(ours_registry) == samples(reference_registry)
    assert ours_registry.get_sample_value("diff_count", {"specialist": "model"}) == 500 + len(
        DIFFERENCE_BUCKETS
    )
    assert ours_registry.get_sample_value("diff_sum", {"specialist": "model"}) is None


@pytest.mark.parametrize("empty", [np.empty(0), np.array([np.nan, np.inf])])
def test_an_empty_observation_still_creates_the_series_at_zero(empty) -> None:
    registry = CollectorRegistry()
    ArrayHistogram("diff", "d", ("specialist",), (0.0, 1.0), registry).observe(("m",), empty)
    assert registry.get_sample_value("diff_count", {"specialist": "m"}) == 0
    assert registry.get_sample_value("diff_bucket", {"specialist": "m", "le": "+Inf"}) == 0
