"""Straggler and low-utilization detection over windows, as episodes that start once and end."""

from __future__ import annotations

import collections
import random
import statistics

import pytest

from orchestrator.monitoring.detectors import RENEWALS_PER_ROUND, LowUtilDetector, StragglerDetector, StragglerEpisode


def _feed(detector, readings):
    """(world_rank, seconds) in order -> every episode the detector answered with."""
    return [episode for rank, seconds in readings for episode in detector.observe(rank, seconds)]


def test_a_rank_over_the_ratio_starts_one_episode_that_ends_when_it_is_back():
    detector = StragglerDetector(ratio=1.2, window=3)
    normal = [(0, 0.10), (1, 0.11), (2, 0.10), (3, 0.10)]
    slow = [(0, 0.10), (1, 0.10), (2, 0.10), (3, 0.16)]
    assert _feed(detector, normal * 3) == []
    started = _feed(detector, slow * 2)
    assert [(e.world_rank, e.started) for e in started] == [(3, True)]  # rank 3's median reaches 0.16 on its 2nd
    assert started[0].rank_median_s == pytest.approx(0.16) and started[0].median_s == pytest.approx(0.10)
    assert started[0].ratio == pytest.approx(1.6)
    assert _feed(detector, slow * 5) == []  # still slow: no second warning
    assert detector.straggling == {3}
    ended = _feed(detector, normal * 2)
    assert [(e.world_rank, e.started) for e in ended] == [(3, False)]
    assert _feed(detector, slow * 2)[0].started  # a new episode


def test_no_verdict_before_two_ranks_have_a_full_window_and_the_median_resists_one_spike():
    detector = StragglerDetector(ratio=1.2, window=3)
    assert _feed(detector, [(0, 0.1), (0, 0.1), (0, 0.1), (1, 9.0), (1, 9.0)]) == []
    detector = StragglerDetector(ratio=1.2, window=3)
    assert _feed(detector, [(0, 0.1), (1, 0.1), (0, 0.1), (1, 5.0), (0, 0.1), (1, 0.1)]) == []


def test_just_over_the_ratio_is_a_straggler_and_exactly_at_it_is_not():
    at = StragglerDetector(ratio=1.5, window=1)
    assert _feed(at, [(0, 1.0), (1, 1.0), (2, 1.5)]) == []
    over = StragglerDetector(ratio=1.5, window=1)
    assert [e.world_rank for e in _feed(over, [(0, 1.0), (1, 1.0), (2, 1.51)])] == [2]


def test_low_utilization_waits_for_warm_up_and_a_full_window_then_warns_once_per_episode():
    detector = LowUtilDetector(threshold_percent=30, window=3, warmup=2)
    gpu = ("node0", 1)
    answers = [detector.observe(gpu, value) for value in [0, 0, 10, 10]]  # warm-up, then 2 of 3 in the window
    assert answers == [None] * 4
    started = detector.observe(gpu, 20)
    assert started.started and started.mean_percent == pytest.approx(40 / 3) and started.samples == 3
    assert [detector.observe(gpu, 25) for _ in range(3)] == [None] * 3  # still low, same episode
    ended = detector.observe(gpu, 90)  # (25 + 25 + 90) / 3: back over 30
    assert not ended.started and ended.mean_percent == pytest.approx(140 / 3)
    assert detector.observe(gpu, 90) is None


def test_low_utilization_episode_ends_on_the_reading_that_lifts_the_mean():
    detector = LowUtilDetector(threshold_percent=30, window=2, warmup=0)
    gpu = ("node1", 0)
    assert detector.observe(gpu, 10) is None
    assert detector.observe(gpu, 10).started
    ended = detector.observe(gpu, 60)  # mean 35
    assert ended is not None and not ended.started and ended.mean_percent == pytest.approx(35)
    other = ("node1", 1)
    assert detector.observe(other, 100) is None and detector.observe(other, 100) is None  # busy GPUs stay quiet


def test_a_ratio_over_a_gap_of_a_fraction_of_a_millisecond_is_noise_not_a_straggler():
    floored = StragglerDetector(ratio=1.2, window=1, min_gap_s=0.01)
    assert _feed(floored, [(0, 0.0010), (1, 0.0010), (2, 0.0012)]) == []  # 1.2x+ but 0.2 ms
    floored = StragglerDetector(ratio=1.2, window=1, min_gap_s=0.01)
    assert [e.world_rank for e in _feed(floored, [(0, 0.05), (1, 0.05), (2, 0.07)])] == [2]  # 1.4x and 20 ms


class _EveryRankStragglerDetector:
    """The straggler check as first written (every rank judged again on each reading): the reference."""

    def __init__(self, ratio, window, min_gap_s):
        self.ratio, self.window, self.min_gap_s = ratio, window, min_gap_s
        self.readings, self.straggling = {}, set()

    def observe(self, world_rank, seconds):
        self.readings.setdefault(world_rank, collections.deque(maxlen=self.window)).append(seconds)
        medians = {rank: statistics.median(v) for rank, v in self.readings.items() if len(v) == self.window}
        if len(medians) < 2:
            return []
        overall = statistics.median(medians.values())
        episodes = []
        for rank, median in sorted(medians.items()):
            slow = median > self.ratio * overall and median - overall >= self.min_gap_s
            if slow != (rank in self.straggling):
                (self.straggling.add if slow else self.straggling.discard)(rank)
                episodes.append(StragglerEpisode(world_rank=rank, started=slow, rank_median_s=median, median_s=overall))
        return episodes


def test_after_a_round_without_change_the_stragglers_are_exactly_the_ranks_over_the_ratio():
    generator = random.Random(5)
    detector = StragglerDetector(ratio=1.2, window=3, min_gap_s=0.005)
    reference = _EveryRankStragglerDetector(1.2, 3, 0.005)
    ranks, straggling, episodes = list(range(30)), set(), 0
    for _ in range(30):
        seconds = {rank: generator.choice([0.1, 0.1, 0.11, 0.125, 0.13, 0.2]) for rank in ranks}
        for _ in range(4):  # three rounds fill the windows with the new times; in the fourth nothing changes
            generator.shuffle(ranks)
            for rank in ranks:
                for episode in detector.observe(rank, seconds[rank]):
                    assert episode.started == (episode.world_rank not in straggling)  # each starts, then ends
                    (straggling.add if episode.started else straggling.discard)(episode.world_rank)
                    episodes += 1
                reference.observe(rank, seconds[rank])
        assert detector.straggling == straggling == reference.straggling
    assert episodes > 20


def test_a_straggler_that_the_others_catch_up_with_ends_within_a_quarter_round_without_reporting():
    detector = StragglerDetector(ratio=1.2, window=1)
    _feed(detector, [(rank, 0.1) for rank in range(10)])
    started = _feed(detector, [(9, 0.2)])  # judged at its own reading
    assert [(e.world_rank, e.started, e.median_s) for e in started] == [(9, True, 0.1)]
    # the others slow down as much; rank 9 reports nothing, yet its episode ends when the median is renewed
    episodes = _feed(detector, [(rank, 0.19) for rank in range(9)] * 2)
    ended = [e for e in episodes if e.world_rank == 9]
    assert [(e.started, e.median_s) for e in ended] == [(False, pytest.approx(0.19))]
    assert detector.straggling == frozenset()


@pytest.mark.parametrize("ranks", range(2, RENEWALS_PER_ROUND + 1))
def test_a_job_of_few_ranks_judges_every_rank_at_every_reading(ranks):
    generator = random.Random(ranks)
    detector, reference = StragglerDetector(ratio=1.2, window=3), _EveryRankStragglerDetector(1.2, 3, 0.0)
    for _ in range(2000):
        rank, seconds = generator.randrange(ranks), generator.choice([0.1, 0.1, 0.11, 0.13, 0.2, 0.3])
        assert detector.observe(rank, seconds) == reference.observe(rank, seconds)
