"""Which network interface gloo and NCCL use: torch-free, so a script-mode worker never imports torch."""

from __future__ import annotations

import os
import socket
from typing import Optional

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
