"""A sharded checkpoint's folder: rank 0 clears and makes it before any rank's writer touches it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from orchestrator.train.checkpoint import is_checkpoint, list_checkpoints
from tests.helpers import free_ports
from tests.train.ranks import run_ranks

pytestmark = pytest.mark.slow  # two ranks in child processes


def _save_with_rank_0_late(world_rank: int, port_text: str, folder_text: str) -> None:
    """One rank saving step 1 with DCP; rank 0 lingers after clearing the temporary folder until another rank's
    writer has made it (at most 3 s), the moment a rank ahead of it would strike."""
    import torch
    import torch.distributed as dist

    from orchestrator.train import sharded_checkpoint
    from tests.train.ranks import set_master_in_child

    set_master_in_child(int(port_text))
    dist.init_process_group("gloo", rank=world_rank, world_size=2)
    folder = Path(folder_text)
    if world_rank == 0:
        clear = sharded_checkpoint.remove_checkpoint

        def clear_then_linger(path: Path) -> None:
            clear(path)
            deadline = time.monotonic() + 3
            while not path.exists() and time.monotonic() < deadline:
                time.sleep(0.01)

        sharded_checkpoint.remove_checkpoint = clear_then_linger
    checkpointer = sharded_checkpoint.ShardedCheckpointer(folder, 2, False, world_rank, 60, lambda *_: None)
    model = torch.nn.Linear(4, 2)
    state = {"model": model.state_dict()}
    checkpointer.save(1, state, {"step": 1} if world_rank == 0 else None, {"step": 1, "world_size": 2})
    checkpointer.close()
    dist.destroy_process_group()


def test_a_rank_ahead_of_rank_0_does_not_break_the_checkpoint_folder(tmp_path):
    folder = tmp_path / "checkpoints"
    [port] = free_ports(1)
    codes = run_ranks(
        "tests.train.test_sharded_checkpoint:_save_with_rank_0_late", 2, [str(port), str(folder)], timeout_s=120
    )
    assert codes == [0, 0]
    [saved] = list_checkpoints(folder)
    assert saved.name == "step_000000001" and is_checkpoint(saved)
    assert not list(folder.glob(".step_*"))  # no temporary left
