"""`sentinel sizing`: the default engines' history fits the per-sensor budget."""

from __future__ import annotations

from sentinel.app.sizing import measure


def test_default_history_fits_the_budget_and_rss_grows_with_sensors():
    sizing = measure(20_000)
    assert 3_000 < sizing.accounted_bytes_per_sensor <= 4_096
    # numpy state plus ids and index (freed memory reused in a test process may make it look
    # smaller, never larger): far from the 10 KB per sensor a 100,000-sensor pod's 1 GiB allows
    assert sizing.rss_growth_bytes < 20_000 * 10_000
    assert "bytes per sensor" in sizing.render()


def test_the_checkpoint_of_a_history_is_sized_and_restorable():
    sizing = measure(2_000, checkpoint=True)
    cost = sizing.checkpoint
    assert cost is not None
    # The file holds the numpy state (about the accounted bytes) plus ids and metadata.
    assert 2_000 * 3_000 < cost.file_bytes < 2_000 * 6_000
    assert "checkpoint:" in sizing.render()
