"""End-of-job summaries: energy by trapezoid over the GPU's reading times, means and peaks."""

from __future__ import annotations

import pytest

from orchestrator.monitoring.gpu_probe import GpuSample
from orchestrator.monitoring.samples import HostSample
from orchestrator.monitoring.summaries import (
    MIB,
    GpuTally,
    energy_wh,
    summarize_gpu,
    summarize_host,
)


def test_energy_is_the_trapezoid_integral_of_power_over_time_in_watt_hours():
    assert energy_wh([(0.0, 300.0), (3600.0, 300.0)]) == pytest.approx(300.0)
    # 100 W rising to 200 W over 36 s, then flat for 18 s: 150*36 + 200*18 = 9000 J = 2.5 Wh
    assert energy_wh([(0.0, 100.0), (36.0, 200.0), (54.0, 200.0)]) == pytest.approx(2.5)
    # uneven spacing weighs each interval by its length, not by the sample count
    assert energy_wh([(0.0, 0.0), (1.0, 360.0), (10.0, 360.0)]) == pytest.approx((180 + 3240) / 3600)
    assert energy_wh([(5.0, 100.0)]) == 0.0 and energy_wh([]) == 0.0
    assert energy_wh([(0.0, 100.0), (10.0, 100.0), (9.0, 100.0)]) == pytest.approx(1000 / 3600)  # no negative time


def _gpu(time_s, util, memory_mib, power, **gpm):
    return GpuSample(
        uuid="GPU-x",
        time_s=time_s,
        utilization_percent=util,
        memory_used_bytes=int(memory_mib * MIB),
        power_w=power,
        gpm=gpm,
    )


def test_gpu_summary_means_peaks_and_energy_skip_readings_a_gpu_did_not_give():
    samples = [
        _gpu(0, 20, 1000, 100, gpm_sm_util_percent=10),
        _gpu(10, 80, 3000, 300, gpm_sm_util_percent=50),
        GpuSample(uuid="GPU-x", time_s=15),
        _gpu(20, 50, 2000, None),
        _gpu(30, 90, 1500, 300),
    ]
    summary = summarize_gpu(samples)
    assert summary.samples == 5
    assert summary.utilization_mean_percent == pytest.approx(60.0)  # (20+80+50+90)/4
    assert summary.utilization_peak_percent == 90
    assert summary.memory_used_peak_mib == pytest.approx(3000)
    assert summary.power_mean_w == pytest.approx(700 / 3)
    assert summary.energy_wh == pytest.approx((200 * 10 + 300 * 20) / 3600)  # bridged over the missing power
    assert summary.gpm_mean_percent == {"gpm_sm_util_percent": pytest.approx(30.0)}


def test_the_running_tally_equals_the_whole_sequence_at_every_point():
    samples = [_gpu(t * 5.0, (t * 37) % 100, 100 + t, 50 + (t * 13) % 200) for t in range(40)]
    tally = GpuTally()
    for count, sample in enumerate(samples, start=1):
        tally.add(sample)
        assert tally.summary() == summarize_gpu(samples[:count])
    assert tally.summary().energy_wh == pytest.approx(energy_wh([(s.time_s, s.power_w) for s in samples]))


def test_host_summary_cpu_mean_and_peak_ram_peak_and_peak_rss_per_rank():
    samples = [
        HostSample(
            time_s=t,
            cpu_percent=cpu,
            ram_used_bytes=ram * MIB,
            ram_total_bytes=8192 * MIB,
            rank_rss_bytes=rss,
            rank_cpu_percent={},
        )
        for t, cpu, ram, rss in [
            (0, 10.0, 4000, {0: 500 * MIB}),
            (5, 70.0, 4500, {0: 700 * MIB, 1: 300 * MIB}),
            (10, 40.0, 4200, {1: 900 * MIB}),
        ]
    ]
    summary = summarize_host(samples)
    assert (summary.samples, summary.cpu_mean_percent, summary.cpu_peak_percent) == (3, pytest.approx(40.0), 70.0)
    assert summary.ram_used_peak_mib == pytest.approx(4500)
    assert summary.rank_rss_peak_mib == {0: pytest.approx(700), 1: pytest.approx(900)}
