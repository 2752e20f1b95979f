"""Immutable per-rank records of an attempt whose next version costs O(1) or O(sqrt(ranks)), not O(ranks).

The controller's state is replaced, never changed: every event makes a new one. A dict or frozenset of
every rank, copied on each heartbeat, costs O(ranks) per report, which at 32,768 ranks reporting once a
second is more than a core can do. A RankMap version is the versions before it plus one change, kept as a
chain; reading a version folds its chain into a table once (memoized on that version), and a chain as long
as the table is folded when the next change comes, so each change costs O(1) amortized. A RankSet copies one
chunk of ranks per addition. Every version keeps its own values: nothing a later version does is seen
through an earlier one.
"""

from __future__ import annotations

import math
from typing import AbstractSet, Any, ItemsView, Iterable, Iterator, Mapping, Optional, TypeVar, Union

MIN_FOLD = 64
"""Changes kept in a chain before folding, however few ranks there are."""
SET_CHUNK = 256
"""Consecutive ranks per chunk of a RankSet: 128 chunks for 32,768 ranks."""

_Chain = Optional[tuple[Union[int, tuple[int, ...]], Any, "_Chain"]]
"""(a world rank or several, their value, the chain before it): the changes since the table, newest first."""
Value = TypeVar("Value")
_Map = TypeVar("_Map", bound="RankMap[Any]")


class RankMap(Mapping[int, Value]):
    """world_rank -> a value; `with_value` makes the next version in O(1) amortized."""

    __slots__ = ("_table", "_chain", "_chained", "_folded")

    def __init__(self, values: Optional[Mapping[int, Value]] = None):
        self._table: Mapping[int, Value] = dict(values or {})
        self._chain: _Chain = None
        self._chained = 0
        self._folded: Optional[dict[int, Value]] = None

    def with_value(self, world_rank: int, value: Value) -> RankMap[Value]:
        """This mapping with `world_rank` at `value`."""
        return self._next((world_rank,), value)

    def items(self) -> ItemsView[int, Value]:
        """(world_rank, value) pairs, read straight from this version's table."""
        return self._fold().items()

    def __getitem__(self, world_rank: int) -> Value:
        return self._fold()[world_rank]

    def __contains__(self, world_rank: object) -> bool:
        return world_rank in self._fold()

    def __iter__(self) -> Iterator[int]:
        return iter(self._fold())

    def __len__(self) -> int:
        return len(self._fold())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._fold()!r})"

    def _next(self: _Map, world_ranks: tuple[int, ...], value: Any) -> _Map:
        """The next version, of this one's class, with `world_ranks` at `value` (a subclass sets its own slots)."""
        new = object.__new__(type(self))
        if self._chained >= max(len(self._table), MIN_FOLD):
            new._table, new._chain, new._chained = self._fold(), (world_ranks, value, None), len(world_ranks)
        else:
            new._table, new._chain = self._table, (world_ranks, value, self._chain)
            new._chained = self._chained + len(world_ranks)
        new._folded = None
        return new

    def _fold(self) -> dict[int, Value]:
        """The table with this version's chain applied (computed once per version)."""
        if self._folded is None:
            folded = dict(self._table)
            folded.update(reversed(list(_changes(self._chain))))
            self._folded = folded
        return self._folded


class RankTimes(RankMap[float]):
    """world_rank -> a time in seconds; `with_time` makes the next version in O(1).

    `floor` is a time no later than any rank's: what a hang check compares with first, so that it looks
    at every rank only when one of them may be late.
    """

    __slots__ = ("_floor",)

    def __init__(self, times: Optional[Mapping[int, float]] = None):
        super().__init__(times)
        self._floor = min(self._table.values(), default=math.inf)

    def with_time(self, world_rank: int, seconds: float) -> RankTimes:
        """This mapping with `world_rank` at `seconds`: `with_times` written out, as every heartbeat calls it."""
        new = object.__new__(RankTimes)
        if self._chained >= max(len(self._table), MIN_FOLD):
            new._table, new._chain, new._chained = self._fold(), (world_rank, seconds, None), 1
        else:
            new._table, new._chain, new._chained = self._table, (world_rank, seconds, self._chain), self._chained + 1
        new._floor = seconds if seconds < self._floor else self._floor
        new._folded = None
        return new

    def with_times(self, world_ranks: tuple[int, ...], seconds: float) -> RankTimes:
        """This mapping with each of `world_ranks` at `seconds` (heartbeats that came together)."""
        new = self._next(world_ranks, seconds)
        # a rank's earlier time may have been the earliest: the old floor stays a floor, if a low one
        new._floor = seconds if seconds < self._floor else self._floor
        return new

    @property
    def floor(self) -> float:
        """A time no later than any rank's (math.inf when empty); the earliest one after `settle_floor()`."""
        return self._floor

    def settle_floor(self) -> float:
        """Raise `floor` to the earliest time (O(ranks)); later versions start from it. Returns it."""
        # a memo of a value the mapping determines, like the folded table: the mapping does not change
        self._floor = min(self._fold().values(), default=math.inf)
        return self._floor


class RankSet(AbstractSet[int]):
    """A set of world ranks; `with_rank` makes the next version in O(sqrt(ranks)), and its size is known in O(1).

    The ranks are kept in chunks of SET_CHUNK consecutive ranks: an addition copies one chunk and the tuple
    of chunks. (A chain like RankMap's would add in O(1) but could only count its members by folding: the
    controller asks how many ranks exited at each exit.)
    """

    __slots__ = ("_chunks", "_count")

    def __init__(self, ranks: Iterable[int] = ()):
        chunks: dict[int, set[int]] = {}
        for rank in ranks:
            chunks.setdefault(rank // SET_CHUNK, set()).add(rank)
        self._chunks: tuple[frozenset[int], ...] = tuple(
            frozenset(chunks.get(index, ())) for index in range(max(chunks, default=-1) + 1)
        )
        self._count = sum(len(chunk) for chunk in self._chunks)

    def with_rank(self, world_rank: int) -> RankSet:
        """This set with `world_rank` in it (itself when it is in already)."""
        if world_rank in self:
            return self
        return self.with_ranks((world_rank,))

    def with_ranks(self, world_ranks: Iterable[int]) -> RankSet:
        """This set with each of `world_ranks` in it (itself when they are all in already)."""
        added: dict[int, set[int]] = {}
        for rank in world_ranks:
            if rank not in self:
                added.setdefault(rank // SET_CHUNK, set()).add(rank)
        if not added:
            return self
        chunks = list(self._chunks) + [frozenset()] * (max(added) + 1 - len(self._chunks))
        for index, ranks in added.items():
            chunks[index] = chunks[index] | ranks
        new = object.__new__(RankSet)
        new._chunks, new._count = tuple(chunks), self._count + sum(len(ranks) for ranks in added.values())
        return new

    def __contains__(self, world_rank: object) -> bool:
        if not isinstance(world_rank, int) or world_rank < 0:
            return False
        index = world_rank // SET_CHUNK
        return index < len(self._chunks) and world_rank in self._chunks[index]

    def __iter__(self) -> Iterator[int]:
        return (rank for chunk in self._chunks for rank in sorted(chunk))

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        return f"RankSet({list(self)!r})"


def _links(chain: _Chain) -> Iterator[tuple[Union[int, tuple[int, ...]], Any, _Chain]]:
    while chain is not None:
        yield chain
        chain = chain[2]


def _changes(chain: _Chain) -> Iterator[tuple[int, Any]]:
    """(world_rank, value) of each change, newest first."""
    # one rank is kept bare: a heartbeat makes no tuple for it
    return (
        (rank, value) for ranks, value, _ in _links(chain) for rank in (ranks if isinstance(ranks, tuple) else (ranks,))
    )
