"""The only place a process group is created and destroyed."""

from __future__ import annotations

import contextlib
import os
import socket
from datetime import timedelta
from typing import Iterator, Optional

import torch
import torch.distributed as dist

from orchestrator.rendezvous import WorkerSpec

SOCKET_IFNAME_VARIABLES = ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")


def interface_holding(ip: str) -> Optional[str]:
    """The network interface that carries `ip` on this host, or None."""
    import psutil

    for name, addresses in psutil.net_if_addrs().items():
        if any(address.family in (socket.AF_INET, socket.AF_INET6) and address.address == ip for address in addresses):
            return name
    return None


def pin_socket_interface(node_ip: str) -> None:
    """Make gloo and NCCL use the interface of this worker's Ray node IP (unless the user chose one).

    On hosts with several interfaces both libraries resolve the hostname on their own, which can
    land on 127.0.0.1 and hang a multi-host job until it fails with "Connection refused".
    """
    name = interface_holding(node_ip)
    if name is None:
        return
    for variable in SOCKET_IFNAME_VARIABLES:
        os.environ.setdefault(variable, name)


@contextlib.contextmanager
def process_group(spec: WorkerSpec, device: torch.device, timeout_s: float) -> Iterator[None]:
    """Join the job's process group through MASTER_ADDR/MASTER_PORT, and always leave it."""
    extra = {"device_id": device} if spec.backend == "nccl" else {}
    dist.init_process_group(backend=spec.backend, init_method="env://", rank=spec.world_rank,
                            world_size=spec.world_size, timeout=timedelta(seconds=timeout_s), **extra)
    try:
        yield
    finally:
        dist.destroy_process_group()
