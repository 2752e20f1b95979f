"""How the built-in loop spreads the model over the ranks: DDP replicas or FSDP2 shards, behind one interface.

The loop only needs four things from either: the callable that runs a micro-batch, a way to skip the
gradient synchronisation on the micro-batches before the last of an optimizer step, the full weights at the
end (for MLflow and the digest), and the plain module whose parameter names are the checkpoint's.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Optional, cast

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from orchestrator.config.schema import DdpConfig, FsdpConfig, JobConfig, TrainerConfig
from orchestrator.errors import ConfigError
from orchestrator.train.gpt import Gpt


@dataclass
class Parallel:
    """The model as the loop drives it."""

    model: nn.Module
    """What a step calls: the DDP wrapper, or the sharded module (each under torch.compile when asked)."""
    module: nn.Module
    """The plain module (sharded in place under FSDP): its parameter names are the checkpoint's and MLflow's."""
    strategy: str
    """ddp or fsdp."""
    ddp: Optional[DistributedDataParallel] = None
    """The DDP wrapper (None under FSDP): the straggler timer hooks into its gradient buckets."""

    @contextlib.contextmanager
    def gradient_sync(self, enabled: bool) -> Iterator[None]:
        """Within: the backward synchronises gradients only if `enabled` (the last micro-batch of a step)."""
        if self.ddp is not None:
            with contextlib.nullcontext() if enabled else self.ddp.no_sync():
                yield
            return
        from torch.distributed.fsdp import FSDPModule

        if isinstance(self.module, FSDPModule):
            self.module.set_requires_gradient_sync(enabled)
        yield

    def full_weights(self) -> dict[str, torch.Tensor]:
        """The whole model's weights on the CPU: on every rank under DDP, on rank 0 only under FSDP (gathered
        shard by shard, so no rank ever holds more than the full model once; the other ranks get {})."""
        if self.strategy != "fsdp":
            return {name: tensor.detach().cpu() for name, tensor in self.module.state_dict().items()}
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        gathered = get_model_state_dict(self.module, options=options)
        return {name: value.detach() for name, value in gathered.items() if isinstance(value, torch.Tensor)}


def wrap(module: nn.Module, job: JobConfig, device: torch.device, world_size: int) -> Parallel:
    """`module` under the configured strategy (and torch.compile when trainer.compile)."""
    if job.scaling.strategy == "fsdp":
        shard(module, job.fsdp, job.trainer, device, world_size)
        return Parallel(model=module, module=module, strategy="fsdp")
    ddp = wrap_ddp(compiled(module, job.trainer), device, job.ddp)
    return Parallel(model=ddp, module=module, strategy="ddp", ddp=ddp)


def compiled(module: nn.Module, trainer: TrainerConfig) -> nn.Module:
    """`module` under torch.compile when trainer.compile (the parameters stay the module's own), else `module`.

    DDP wraps the compiled module, not the other way round: compiling the DDP wrapper (which would let
    TorchDynamo split the graph at bucket boundaries) compiles nothing for modules whose forward is
    torch.nn's own, such as nn.Sequential (torch 2.13 skips those frames inside DDP's forward). The
    price: a compiled backward hands DDP all gradients at its end, so all-reduces do not overlap it.
    Under FSDP each sharding unit is compiled instead (see `shard`).
    """
    if not trainer.compile:
        return module
    # torch.compile of a Module returns an OptimizedModule (a Module); its stubs say only a callable
    return cast(nn.Module, torch.compile(module, mode=trainer.compile_mode))


def wrap_ddp(module: nn.Module, device: torch.device, ddp: DdpConfig) -> DistributedDataParallel:
    """The DDP wrapper with the `ddp` config's bucket size, bucket views, static graph and unused-parameter search."""
    return DistributedDataParallel(
        module,
        device_ids=[device.index] if device.type == "cuda" else None,
        bucket_cap_mb=ddp.bucket_cap_mb,
        gradient_as_bucket_view=ddp.gradient_as_bucket_view,
        static_graph=ddp.static_graph,
        find_unused_parameters=ddp.find_unused_parameters,
    )


def shard(module: nn.Module, fsdp: FsdpConfig, trainer: TrainerConfig, device: torch.device, world_size: int) -> None:
    """Shard `module` in place over all ranks with FSDP2: each unit of `sharding_units`, then the root.

    With trainer.amp=bf16 the gathered parameters are bf16 while gradients are reduced, and the shards and
    optimizer state kept, in fp32 (FSDP2's MixedPrecisionPolicy; the loop then needs no autocast). Outputs are
    cast back to fp32 so the loss is computed in full precision as under DDP's autocast.

    With trainer.compile each unit's forward is compiled in place before it is sharded, so FSDP's gathers and
    reductions stay hooks around the compiled graphs (TorchDynamo compiles nothing through a whole sharded
    module: it skips FSDP's own frames). Only the root's own layers (embeddings, a head) run eagerly.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    mesh = init_device_mesh(device.type, (world_size,))
    precision = MixedPrecisionPolicy()
    if trainer.amp == "bf16":
        precision = MixedPrecisionPolicy(
            param_dtype=torch.bfloat16, reduce_dtype=torch.float32, output_dtype=torch.float32
        )
    offload = CPUOffloadPolicy() if fsdp.cpu_offload else OffloadPolicy()
    for unit in sharding_units(module, fsdp.wrap):
        if trainer.compile:
            unit.compile(mode=trainer.compile_mode)
        fully_shard(
            unit,
            mesh=mesh,
            reshard_after_forward=fsdp.reshard_after_forward,
            mp_policy=precision,
            offload_policy=offload,
        )
    # the root's own parameters (embeddings, a head) form the last unit; its backward is last, so it is
    # never resharded after forward to be gathered again at once
    fully_shard(module, mesh=mesh, reshard_after_forward=False, mp_policy=precision, offload_policy=offload)


def sharding_units(module: nn.Module, names: list[str]) -> list[nn.Module]:
    """The submodules sharded one unit each: those of the classes in `names` (dotted class names) when given;
    else each gpt transformer block, or each top-level child with parameters (the items of a top-level
    ModuleList or ModuleDict, which have no forward of their own)."""
    if names:
        wanted = set(names)
        named = [child for child in module.modules() if child is not module and class_name(child) in wanted]
        if not named:
            present = sorted({class_name(child) for child in module.modules() if child is not module})
            raise ConfigError(
                [
                    f"fsdp.wrap={list(names)} is not valid: no module of the model has these classes; "
                    f"its module classes are {', '.join(present)}"
                ]
            )
        return named
    if isinstance(module, Gpt):
        return list(module.blocks)
    units: list[nn.Module] = []
    for child in module.children():
        if isinstance(child, nn.ModuleDict):
            units.extend(child.values())
        elif isinstance(child, nn.ModuleList):
            units.extend(child)
        else:
            units.append(child)
    return [unit for unit in units if any(True for _ in unit.parameters())]


def class_name(module: nn.Module) -> str:
    """`package.module.Class` of a module, as fsdp.wrap names it."""
    kind = type(module)
    return f"{kind.__module__}.{kind.__qualname__}"


def broadcast_from_rank0(value: str) -> str:
    """Rank 0's `value` on every rank (a no-op for one rank)."""
    if dist.get_world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return str(box[0])
