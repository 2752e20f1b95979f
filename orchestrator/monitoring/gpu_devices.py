"""Pure: which NVML devices a job's CUDA_VISIBLE_DEVICES names, by UUID.

Ray writes the GPU ids it assigned into each worker's CUDA_VISIBLE_DEVICES. Those ids are the
node's own device ids: where the raylet itself ran under CUDA_VISIBLE_DEVICES, Ray hands out the
entries of that list (indices, `GPU-` UUIDs or `MIG-` UUIDs); otherwise it hands out indices into
all of the node's GPUs. CUDA reads an index in its enumeration order (CUDA_DEVICE_ORDER:
FASTEST_FIRST by default, or PCI_BUS_ID), while NVML numbers devices by PCI bus id and ignores
CUDA_VISIBLE_DEVICES altogether, so an index only means the same GPU in both when the order is
PCI_BUS_ID or every GPU is the same model. UUIDs mean the same everywhere: everything is resolved
to a UUID here, and the monitor samples by UUID.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Sequence, TypeVar

PCI_BUS_ID = "PCI_BUS_ID"
FASTEST_FIRST = "FASTEST_FIRST"
_LEGACY_MIG = re.compile(r"^MIG-(GPU-[0-9A-Fa-f-]+)/(\d+)/(\d+)$")


@dataclass(frozen=True)
class MigDevice:
    """One MIG instance of a physical GPU."""

    uuid: str
    """The instance's UUID, `MIG-...`."""
    gpu_instance_id: int
    compute_instance_id: int


@dataclass(frozen=True)
class GpuDevice:
    """A physical GPU as NVML lists it on a node."""

    uuid: str
    """`GPU-...`."""
    pci_bus_id: str
    """Domain:bus:device.function, e.g. 00000000:17:00.0 (NVML's own order)."""
    name: str = ""
    compute_capability: tuple[int, int] = (0, 0)
    cores: int = 0
    """CUDA cores; with the compute capability, what CUDA's FASTEST_FIRST order ranks by."""
    mig: tuple[MigDevice, ...] = ()


@dataclass(frozen=True)
class DeviceMapping:
    """The UUIDs in CUDA_VISIBLE_DEVICES order, and a caveat when an index mapping is a best guess."""

    uuids: tuple[str, ...]
    note: Optional[str] = None


class DeviceMappingError(ValueError):
    """A CUDA_VISIBLE_DEVICES entry names no device on this node, or more than one."""


def parse_visible_devices(text: str) -> list[str]:
    """The entries CUDA would use: comma-separated, blanks stripped, up to the first invalid one.

    CUDA stops reading CUDA_VISIBLE_DEVICES at the first entry that is not an index or a UUID
    (`0,2,-1,1` shows devices 0 and 2), so that is where this stops too.
    """
    entries = []
    for entry in (part.strip() for part in text.split(",")):
        if not (entry.isdigit() or entry.startswith(("GPU-", "MIG-"))):
            break
        entries.append(entry)
    return entries


def cuda_order(devices: Sequence[GpuDevice], device_order: Optional[str]) -> list[GpuDevice]:
    """The node's GPUs in the order CUDA numbers them under CUDA_DEVICE_ORDER (unset = FASTEST_FIRST).

    PCI_BUS_ID is NVML's order. FASTEST_FIRST is CUDA's undocumented speed ranking; it is taken as
    compute capability, then core count, descending, with ties in PCI bus order, which is exact when
    all GPUs are the same model (see `resolve_visible` for the caveat otherwise).
    """
    by_bus = sorted(devices, key=lambda device: device.pci_bus_id.lower())
    if device_order == PCI_BUS_ID:
        return by_bus
    return sorted(
        by_bus, key=lambda device: (-device.compute_capability[0], -device.compute_capability[1], -device.cores)
    )


def resolve_visible(text: str, devices: Sequence[GpuDevice], device_order: Optional[str]) -> DeviceMapping:
    """UUIDs of the devices a CUDA_VISIBLE_DEVICES value names, in its order (DeviceMappingError if unknown)."""
    entries = parse_visible_devices(text)
    ordered = cuda_order(devices, device_order)
    uuids = tuple(_resolve_entry(entry, ordered) for entry in entries)
    if len(set(uuids)) != len(uuids):
        raise DeviceMappingError(f"CUDA_VISIBLE_DEVICES={text} names a device twice")
    note = None
    mixed_models = len({device.name for device in devices}) > 1
    if device_order != PCI_BUS_ID and mixed_models and any(entry.isdigit() for entry in entries):
        note = (
            "this node mixes GPU models and CUDA_DEVICE_ORDER is FASTEST_FIRST, whose order CUDA does not "
            "document: GPU indices were mapped by compute capability and core count; set "
            "CUDA_DEVICE_ORDER=PCI_BUS_ID on the nodes (or give Ray GPU UUIDs) for an exact mapping"
        )
    return DeviceMapping(uuids=uuids, note=note)


def _resolve_entry(entry: str, ordered: Sequence[GpuDevice]) -> str:
    if entry.isdigit():
        index = int(entry)
        if index >= len(ordered):
            raise DeviceMappingError(
                f"CUDA_VISIBLE_DEVICES entry {entry} is past the {len(ordered)} GPUs NVML lists on this node"
            )
        return ordered[index].uuid
    legacy = _LEGACY_MIG.match(entry)
    if legacy:
        parent = _unique(entry, [d for d in ordered if d.uuid.lower().startswith(legacy.group(1).lower())], "GPU")
        gpu_instance, compute_instance = int(legacy.group(2)), int(legacy.group(3))
        matches = [
            m for m in parent.mig if (m.gpu_instance_id, m.compute_instance_id) == (gpu_instance, compute_instance)
        ]
        return _unique(entry, matches, "MIG instance").uuid
    if entry.startswith("MIG-"):
        instances = [m for device in ordered for m in device.mig if m.uuid.lower().startswith(entry.lower())]
        return _unique(entry, instances, "MIG instance").uuid
    # CUDA accepts any unique prefix of a GPU UUID
    return _unique(entry, [d for d in ordered if d.uuid.lower().startswith(entry.lower())], "GPU").uuid


_Match = TypeVar("_Match")


def _unique(entry: str, matches: Sequence[_Match], what: str) -> _Match:
    if len(matches) == 1:
        return matches[0]
    found = "no" if not matches else f"{len(matches)}"
    raise DeviceMappingError(
        f"CUDA_VISIBLE_DEVICES entry {entry} matches {found} {what} on this node (NVML lists its UUIDs)"
    )
