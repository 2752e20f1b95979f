"""Export each built-in model to ONNX and measure: export time, parity error, and CPU latency per batch in ONNX
Runtime against eager PyTorch, with their ratio.

The models are the built-in configs as `orchestrator train model=NAME` builds them (mlp and cnn on the digits
shape (1, 8, 8), 10 classes; gpt on data=tokens' defaults), with their initial weights (the weights do not
change the operators, so neither the export nor the latency). Each model is exported once through the same
path as `orchestrator export` (`export_and_check`: torch.export, then torch.onnx's dynamo exporter with a
dynamic batch axis, then the parity check in ONNX Runtime); latency is the median of `--reps` timed calls per
batch size after `--warmup` untimed ones, eager and ORT calls alternating, eager in torch.no_grad(), both with the threads each library picks
by default (torch: one per core; ORT: one per core) on this machine.

    .venv/bin/python benchmarks/bench_export.py                  # mlp, cnn, gpt; batches 1 and 64
    .venv/bin/python benchmarks/bench_export.py --models gpt --batches 1,8 --reps 50
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from orchestrator.config.schema import (
    CnnConfig,
    DigitsConfig,
    GptConfig,
    MlpConfig,
    TokensConfig,
    data_input_shape,
    data_num_classes,
)
from orchestrator.export.parity import DEFAULT_TOLERANCE
from orchestrator.export.pipeline import export_and_check
from orchestrator.export.runtime import OnnxRunner
from orchestrator.train.models import build_model


def _models() -> dict[str, tuple[Any, Callable[[int], np.ndarray]]]:
    digits, tokens = DigitsConfig(), TokensConfig()
    digits_shape, token_shape = data_input_shape(digits), data_input_shape(tokens)
    generator = np.random.default_rng(0)
    return {
        "mlp": (
            build_model(MlpConfig(), digits_shape, data_num_classes(digits)),
            lambda rows: generator.standard_normal((rows, *digits_shape), dtype=np.float32),
        ),
        "cnn": (
            build_model(CnnConfig(), digits_shape, data_num_classes(digits)),
            lambda rows: generator.standard_normal((rows, *digits_shape), dtype=np.float32),
        ),
        "gpt": (
            build_model(GptConfig(), token_shape, data_num_classes(tokens)),
            lambda rows: generator.integers(0, data_num_classes(tokens), (rows, *token_shape), dtype=np.int64),
        ),
    }


def _medians_s(first: Callable[[], Any], second: Callable[[], Any], warmup: int, reps: int) -> tuple[float, float]:
    """Median seconds per call of each, timed alternately (first, second, first, ...) so that load on a shared
    machine falls on both alike."""
    for _ in range(warmup):
        first()
        second()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(reps):
        for call, into in ((first, times[0]), (second, times[1])):
            started = time.perf_counter()
            call()
            into.append(time.perf_counter() - started)
    return statistics.median(times[0]), statistics.median(times[1])


def main() -> None:
    """Print one table per model: export time and parity, then latency per batch size with the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="mlp,cnn,gpt")
    parser.add_argument("--batches", default="1,64")
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    models = _models()
    batches = [int(size) for size in args.batches.split(",")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; tolerance: {DEFAULT_TOLERANCE.describe()}")
    with tempfile.TemporaryDirectory(prefix="bench-export-") as folder:
        for name in args.models.split(","):
            model, inputs = models[name]
            model.eval()
            path = Path(folder) / f"{name}.onnx"
            sets = [("input example", inputs(4)), ("eval batch", inputs(64))]
            report = export_and_check(model, name, "onnx", path, sets, DEFAULT_TOLERANCE, lambda line: None)
            worst = max(report.checks, key=lambda check: check.max_abs)
            parameters = sum(parameter.numel() for parameter in model.parameters())
            print(
                f"\n{name}: {parameters:,} parameters, export {report.export_s:.2f} s, {path.stat().st_size / 1e6:.2f} MB; "
                f"parity: max abs error {worst.max_abs:.2e}, max rel error {worst.max_rel:.2e}"
            )
            runner = OnnxRunner(path)
            print(f"  {'batch':>6} {'eager ms':>10} {'ORT ms':>10} {'eager/ORT':>10}")
            for rows in batches:
                batch = inputs(rows)
                tensor = torch.from_numpy(batch)

                def eager(model: Any = model, tensor: torch.Tensor = tensor) -> Any:
                    with torch.no_grad():
                        return model(tensor)

                eager_s, ort_s = _medians_s(eager, lambda batch=batch: runner.run(batch), args.warmup, args.reps)
                print(f"  {rows:>6} {eager_s * 1e3:>10.3f} {ort_s * 1e3:>10.3f} {eager_s / ort_s:>9.2f}x")


if __name__ == "__main__":
    main()
