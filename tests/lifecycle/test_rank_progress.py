"""Per-rank times and sets whose versions are independent, whatever order they are made and read in."""

from __future__ import annotations

import math
import random

from orchestrator.lifecycle.rank_progress import MIN_FOLD, SET_CHUNK, RankMap, RankSet, RankTimes


def test_every_version_keeps_its_own_times_and_compares_like_a_dict():
    start = RankTimes({0: 1.0, 1: 1.0, 2: 1.0})
    later = start.with_time(1, 5.0)
    branch = start.with_time(2, 7.0).with_time(3, 8.0)  # a second version made from the same one
    assert later == {0: 1.0, 1: 5.0, 2: 1.0} and dict(start) == {0: 1.0, 1: 1.0, 2: 1.0}
    assert branch == {0: 1.0, 1: 1.0, 2: 7.0, 3: 8.0} and len(branch) == 4 and 3 not in later
    assert later.with_time(0, 9.0) == {0: 9.0, 1: 5.0, 2: 1.0} and later[1] == 5.0
    assert RankTimes() == {} and RankTimes().floor == math.inf


def test_long_chains_fold_and_random_versions_match_dicts():
    generator = random.Random(3)
    versions = [(RankTimes({rank: 0.0 for rank in range(10)}), {rank: 0.0 for rank in range(10)})]
    for step in range(20 * MIN_FOLD):
        times, expected = generator.choice(versions[-5:]) if step % 7 == 0 else versions[-1]
        rank, seconds = generator.randrange(40), float(step)
        versions.append((times.with_time(rank, seconds), {**expected, rank: seconds}))
        if step % 50 == 0:  # read some old versions midway, as well as at the end
            old, old_expected = generator.choice(versions)
            assert old == old_expected
    for times, expected in versions:
        assert times == expected and sorted(times.items()) == sorted(expected.items()) and len(times) == len(expected)


def test_the_floor_is_never_later_than_any_time_and_settles_to_the_earliest():
    times = RankTimes({0: 10.0, 1: 10.0}).with_time(0, 50.0)
    assert times.floor == 10.0
    moved = times.with_time(1, 60.0)
    assert moved.floor <= min(moved.values()) and moved.settle_floor() == 50.0 and moved.floor == 50.0
    assert moved.with_time(0, 70.0).floor == 50.0  # later versions start from the settled floor
    assert moved.with_time(0, 5.0).floor == 5.0  # a time earlier than the floor lowers it
    assert times.floor == 10.0 and times == {0: 50.0, 1: 10.0}  # settling a later version changed no earlier one


def test_a_rank_set_adds_in_versions_and_compares_like_a_set():
    empty = RankSet()
    grown = empty
    for rank in range(3 * MIN_FOLD):
        grown = grown.with_rank(rank % (2 * MIN_FOLD))
    assert grown == set(range(2 * MIN_FOLD)) and len(grown) == 2 * MIN_FOLD and 5 in grown and -1 not in grown
    assert empty == frozenset() and frozenset() == empty and len(empty) == 0
    assert grown.with_rank(5) is grown  # already in its table: no new version
    branch = empty.with_rank(9)
    assert branch == {9} and empty == set() and list(grown.with_rank(1000))[-1] == 1000


def test_ranks_that_reported_together_are_one_change():
    times = RankTimes({0: 1.0, 1: 1.0, 2: 1.0}).with_times((2, 0), 4.0).with_time(0, 6.0)
    assert times == {0: 6.0, 1: 1.0, 2: 4.0} and times.floor == 1.0
    stepping = RankSet().with_ranks((3, 1, 3))
    assert stepping == {1, 3} and stepping.with_ranks(()) is stepping and stepping.with_ranks((1, 4)) == {1, 3, 4}


def test_a_rank_map_holds_any_value_in_independent_versions():
    empty: RankMap[str] = RankMap()
    results = empty
    for rank in range(3 * MIN_FOLD):
        results = results.with_value(rank, f"result {rank}")
    assert len(results) == 3 * MIN_FOLD and results[5] == "result 5" and results.get(-1) is None
    assert empty == {} and dict(results.with_value(5, "again")).get(5) == "again" and results[5] == "result 5"
    assert repr(RankMap({1: "a"})) == "RankMap({1: 'a'})"


def test_a_rank_set_counts_its_members_across_chunks_whatever_is_added_twice():
    ranks = RankSet(range(0, 3 * SET_CHUNK, 2))
    grown = ranks.with_ranks(range(0, 3 * SET_CHUNK, 3))
    expected = set(range(0, 3 * SET_CHUNK, 2)) | set(range(0, 3 * SET_CHUNK, 3))
    assert len(grown) == len(expected) and grown == expected and list(grown) == sorted(expected)
    assert len(ranks) == len(range(0, 3 * SET_CHUNK, 2)) and 3 not in ranks and 3 in grown
