"""CUDA_VISIBLE_DEVICES -> NVML UUIDs: indices in both CUDA orders, UUIDs and prefixes, MIG ids."""

from __future__ import annotations

import pytest

from orchestrator.monitoring.gpu_devices import (
    DeviceMappingError,
    GpuDevice,
    MigDevice,
    cuda_order,
    parse_visible_devices,
    resolve_visible,
)

UUID_A = "GPU-aaaaaaaa-1111-2222-3333-444444444444"
UUID_B = "GPU-bbbbbbbb-1111-2222-3333-444444444444"
UUID_C = "GPU-cccccccc-1111-2222-3333-444444444444"
MIG_1 = "MIG-11111111-aaaa-bbbb-cccc-dddddddddddd"
MIG_2 = "MIG-22222222-aaaa-bbbb-cccc-dddddddddddd"

# NVML lists devices by PCI bus id; these are given out of bus order on purpose
H100S = [
    GpuDevice(uuid=UUID_B, pci_bus_id="00000000:9A:00.0", name="NVIDIA H100", compute_capability=(9, 0), cores=16896),
    GpuDevice(uuid=UUID_A, pci_bus_id="00000000:1B:00.0", name="NVIDIA H100", compute_capability=(9, 0), cores=16896),
    GpuDevice(
        uuid=UUID_C,
        pci_bus_id="00000000:4C:00.0",
        name="NVIDIA H100",
        compute_capability=(9, 0),
        cores=16896,
        mig=(
            MigDevice(MIG_1, gpu_instance_id=1, compute_instance_id=0),
            MigDevice(MIG_2, gpu_instance_id=2, compute_instance_id=0),
        ),
    ),
]
# a slower card in the lowest PCI slot: FASTEST_FIRST puts it last, PCI_BUS_ID first
MIXED = [
    GpuDevice(uuid=UUID_A, pci_bus_id="00000000:01:00.0", name="Tesla T4", compute_capability=(7, 5), cores=2560),
    GpuDevice(uuid=UUID_B, pci_bus_id="00000000:02:00.0", name="NVIDIA A100", compute_capability=(8, 0), cores=6912),
    GpuDevice(uuid=UUID_C, pci_bus_id="00000000:03:00.0", name="NVIDIA A100", compute_capability=(8, 0), cores=6912),
]


def test_indices_follow_pci_bus_order_when_all_gpus_are_alike_in_either_cuda_order():
    for order in ("PCI_BUS_ID", "FASTEST_FIRST", None):
        mapping = resolve_visible("2,0", H100S, order)
        assert mapping.uuids == (UUID_B, UUID_A)
        assert mapping.note is None


def test_fastest_first_puts_the_faster_model_first_and_says_the_mapping_is_a_best_guess():
    assert [d.uuid for d in cuda_order(MIXED, "FASTEST_FIRST")] == [UUID_B, UUID_C, UUID_A]
    guessed = resolve_visible("0,2", MIXED, None)  # unset = FASTEST_FIRST
    assert guessed.uuids == (UUID_B, UUID_A)
    assert "CUDA_DEVICE_ORDER=PCI_BUS_ID" in guessed.note
    exact = resolve_visible("0,2", MIXED, "PCI_BUS_ID")
    assert exact.uuids == (UUID_A, UUID_C) and exact.note is None
    assert resolve_visible(f"{UUID_A},{UUID_C}", MIXED, None).note is None  # UUIDs never need a guess


def test_uuids_and_unique_uuid_prefixes_name_gpus_whatever_the_order():
    assert resolve_visible(f"{UUID_C},{UUID_A}", H100S, None).uuids == (UUID_C, UUID_A)
    assert resolve_visible("GPU-bbbb, GPU-AAAAAAAA", H100S, "PCI_BUS_ID").uuids == (UUID_B, UUID_A)


def test_mig_instances_by_uuid_and_by_the_legacy_gpu_instance_form():
    assert resolve_visible(MIG_2, H100S, None).uuids == (MIG_2,)
    assert resolve_visible(f"MIG-{UUID_C}/1/0,MIG-2222", H100S, None).uuids == (MIG_1, MIG_2)


def test_parsing_stops_at_the_first_invalid_entry_like_cuda():
    assert parse_visible_devices("0,2,-1,1") == ["0", "2"]
    assert parse_visible_devices(" 1 , GPU-ab ,MIG-cd") == ["1", "GPU-ab", "MIG-cd"]
    assert parse_visible_devices("") == [] and parse_visible_devices("NoDevFiles") == []
    assert resolve_visible("1,,0", H100S, "PCI_BUS_ID").uuids == (UUID_C,)


@pytest.mark.parametrize(
    "text, message",
    [
        ("3", "entry 3 is past the 3 GPUs"),
        ("GPU-", "matches 3 GPU"),
        ("GPU-dddd", "matches no GPU"),
        ("MIG-3333", "matches no MIG instance"),
        (f"MIG-{UUID_C}/7/0", "matches no MIG instance"),
        (f"0,{UUID_A}", "names a device twice"),
    ],
)
def test_ids_that_name_no_device_or_several_are_errors_naming_the_entry(text, message):
    with pytest.raises(DeviceMappingError, match=message):
        resolve_visible(text, H100S, "PCI_BUS_ID")
