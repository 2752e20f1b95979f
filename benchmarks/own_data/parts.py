"""The built-in digits split and CNN as user components (`_target_`), for bench_own_data.py.

The same tensors and the same architecture as `model=cnn data=digits`, so the only difference between
the two paths is how batches reach the loop: indexing tensors in memory or a DataLoader over a Dataset.
"""

from __future__ import annotations

from torch.utils.data import TensorDataset

from orchestrator.config.schema import CnnConfig, DigitsConfig
from orchestrator.train.data import load_dataset
from orchestrator.train.models import build_model


def digits(seed: int = 0):
    """(train, eval) TensorDatasets of the built-in digits split for `seed`."""
    data = load_dataset(DigitsConfig(), seed)
    return TensorDataset(data.train_x, data.train_y), TensorDataset(data.test_x, data.test_y)


def cnn():
    """The built-in CNN for 1 x 8 x 8 inputs and 10 classes."""
    return build_model(CnnConfig(), (1, 8, 8), 10)
