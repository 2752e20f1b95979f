"""The monitor's config keys: defaults, overrides, and each rejected value's message."""

from __future__ import annotations

import pytest

from orchestrator.errors import ConfigError
from tests.helpers import compose_job


def test_monitoring_is_on_by_default_every_5_s_and_every_key_overrides(tmp_path):
    monitor = compose_job(["model=mlp"], tmp_path).monitor
    assert (monitor.enabled, monitor.interval_s, monitor.straggler_ratio, monitor.low_util_percent) == (
        True,
        5.0,
        1.2,
        30.0,
    )
    monitor = compose_job(
        [
            "model=mlp",
            "monitor.enabled=false",
            "monitor.interval_s=0.5",
            "monitor.straggler_ratio=1.5",
            "monitor.low_util_percent=0",
        ],
        tmp_path,
    ).monitor
    assert (monitor.enabled, monitor.interval_s, monitor.straggler_ratio, monitor.low_util_percent) == (
        False,
        0.5,
        1.5,
        0,
    )


@pytest.mark.parametrize(
    "override, expected",
    [
        ("monitor.interval_s=0.05", "monitor.interval_s=0.05 is not valid: must be a number >= 0.1"),
        ("monitor.interval_s=0", "monitor.interval_s=0.0 is not valid: must be a number >= 0.1"),
        (
            "monitor.straggler_ratio=1",
            "monitor.straggler_ratio=1.0 is not valid: must be a number > 1 (a rank this many "
            "times slower than the median is a straggler)",
        ),
        (
            "monitor.low_util_percent=101",
            "monitor.low_util_percent=101.0 is not valid: must be a percentage in [0, 100]",
        ),
        ("monitor.low_util_percent=-5", "monitor.low_util_percent=-5.0 is not valid: must be a percentage in [0, 100]"),
    ],
)
def test_invalid_monitor_values_name_the_key_the_value_and_what_is_valid(tmp_path, override, expected):
    with pytest.raises(ConfigError) as raised:
        compose_job(["model=mlp", override], tmp_path)
    assert any(message.startswith(expected) for message in raised.value.problems), raised.value.problems
