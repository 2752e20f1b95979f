"""The workload's `train_loop` under Ray Train's TorchTrainer: 2 CPU workers, gloo, an embedded Ray instance.

python benchmarks/overhead/raytrain.py RESULT STORAGE_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path


def main() -> int:
    result_path, storage = sys.argv[1], sys.argv[2]
    import cloudpickle
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import workload

    cloudpickle.register_pickle_by_value(workload)  # the workers get the function itself, not an import path
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        trainer = TorchTrainer(
            workload.train_loop,
            train_loop_config={"result": result_path, "RAY_TRAIN": True},
            scaling_config=ScalingConfig(num_workers=2, use_gpu=False, resources_per_worker={"CPU": 1}),
            torch_config=TorchConfig(backend="gloo"),
            run_config=RunConfig(storage_path=storage, name="overhead"),
        )
        trainer.fit()
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
