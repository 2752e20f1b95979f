"""A worker's process state, captured and put back: what one sweep trial changes never reaches the next."""

from __future__ import annotations

import os
import random
import sys

import numpy as np
import pytest
import torch

from orchestrator.worker.process_state import ProcessState


@pytest.fixture
def captured(tmp_path, monkeypatch):
    """A capture of this process, and the promise that the test leaves the process as it found it."""
    monkeypatch.chdir(tmp_path)  # the test's own working directory: restore() goes back to it
    before = ProcessState.capture()
    yield before
    before.restore()


def _change_everything(folder):
    os.environ["TRIAL_LEAK"] = "1"
    del os.environ["HOME"]
    os.chdir(folder)
    sys.path.insert(0, str(folder))
    (folder / "trialmod.py").write_text("VALUE = []\n")
    import trialmod  # noqa: F401  (the user's module, imported by the trial)

    torch.set_num_threads(max(1, torch.get_num_threads() + 1))
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = not torch.backends.cudnn.benchmark
    torch.set_float32_matmul_precision("medium")
    torch.set_default_dtype(torch.float64)
    torch.set_grad_enabled(False)
    torch.set_anomaly_enabled(True)
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)


def test_restore_puts_back_environment_folders_user_modules_torch_settings_and_generators(captured, tmp_path):
    threads, matmul = torch.get_num_threads(), torch.get_float32_matmul_precision()
    draws = (random.random(), np.random.rand(), torch.rand(1).item())
    captured.restore()  # the generators back to where the capture found them: the same draws again
    cwd = os.getcwd()
    (tmp_path / "trial").mkdir()

    _change_everything(tmp_path / "trial")
    forgotten = captured.restore()

    assert "TRIAL_LEAK" not in os.environ and "HOME" in os.environ
    assert os.getcwd() == cwd and str(tmp_path / "trial") not in sys.path
    assert forgotten == ["trialmod"] and "trialmod" not in sys.modules
    assert torch.get_num_threads() == threads and torch.get_float32_matmul_precision() == matmul
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.get_default_dtype() == torch.float32 and torch.is_grad_enabled() and not torch.is_anomaly_enabled()
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == draws


def test_installed_and_our_own_modules_stay_loaded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    names = ("json.tool", "orchestrator.worker.stop")
    for name in names:  # not loaded when the worker started: loaded by the trial
        monkeypatch.delitem(sys.modules, name, raising=False)
    before = ProcessState.capture()
    import json.tool  # noqa: F401  (installed: the standard library)

    import orchestrator.worker.stop  # noqa: F401  (ours)

    assert before.restore() == []
    assert all(name in sys.modules for name in names)
