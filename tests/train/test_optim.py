"""Learning-rate schedule: linear warm-up, then constant or cosine to zero."""

from __future__ import annotations

import pytest

from orchestrator.config.schema import OptimConfig
from orchestrator.train.optim import lr_factor


def test_warmup_then_cosine_reaches_zero_at_the_last_step():
    optim = OptimConfig(schedule="cosine", warmup_steps=4)
    assert [lr_factor(optim, step, 14) for step in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(optim, 4, 14) == 1.0
    assert lr_factor(optim, 9, 14) == pytest.approx(0.5)
    assert lr_factor(optim, 14, 14) == pytest.approx(0.0)


def test_constant_schedule_stays_at_the_peak():
    optim = OptimConfig(schedule="constant", warmup_steps=0)
    assert {lr_factor(optim, step, 10) for step in range(10)} == {1.0}
