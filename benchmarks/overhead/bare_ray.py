"""The workload's `train_loop` under the least a Ray launcher can do: the floor of any launcher built on Ray actors.

One placement group of two 1-CPU bundles, one plain actor per bundle, torchrun's environment variables
set by hand (rank 0's actor picks the port), then `train_loop` on both; no tracking, monitoring,
checkpoints, heartbeats or restarts. What this costs over torchrun is Ray's own price (driver connect,
worker processes, their `import ray`); what the orchestrator costs over this is ours.

    python benchmarks/overhead/bare_ray.py RESULT [ADDRESS]     # embedded instance without ADDRESS
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

WORLD_SIZE = 2


def main() -> int:
    result_path = sys.argv[1]
    address = sys.argv[2] if len(sys.argv) > 2 else None
    import cloudpickle
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import workload

    cloudpickle.register_pickle_by_value(workload)  # the actors get the function itself, not an import path

    @ray.remote(num_cpus=1)
    class Rank:
        def address(self) -> tuple[str, int]:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                return "127.0.0.1", probe.getsockname()[1]

        def train(self, rank: int, master: tuple[str, int], config: dict) -> None:
            os.environ.update(
                RANK=str(rank),
                LOCAL_RANK=str(rank),
                WORLD_SIZE=str(WORLD_SIZE),
                MASTER_ADDR=master[0],
                MASTER_PORT=str(master[1]),
                OMP_NUM_THREADS="1",
            )
            workload.train_loop(config)

    if address is None:
        ray.init(address="local", num_cpus=WORLD_SIZE, include_dashboard=False, logging_level="WARNING")
    else:
        ray.init(address=address, logging_level="WARNING")
    group, ranks = None, []
    try:
        group = placement_group([{"CPU": 1}] * WORLD_SIZE, strategy="PACK")
        ray.get(group.ready())
        ranks = [
            Rank.options(scheduling_strategy=PlacementGroupSchedulingStrategy(group, bundle)).remote()
            for bundle in range(WORLD_SIZE)
        ]
        master = ray.get(ranks[0].address.remote())
        ray.get([actor.train.remote(rank, master, {"result": result_path}) for rank, actor in enumerate(ranks)])
    finally:
        # on a running cluster these outlive a failed run otherwise, until Ray notices the driver is gone
        for actor in ranks:
            ray.kill(actor)
        if group is not None:
            remove_placement_group(group)
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
