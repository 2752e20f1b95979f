"""hydra/sweeper=optuna's search space: Hydra's sweep overrides as Optuna distributions, and back to overrides.

`interval(a, b)` is a uniform float (`int(interval(a, b))` an int), `tag(log, interval(a, b))` the same
on a log scale, `choice(...)` a categorical, `range(start, stop, step)` a stepped int or float from start
to stop inclusive (Optuna's high is inclusive; hydra-optuna-sweeper read range() the same way) and
`shuffle(range(...))` a categorical of its values. An override that is no sweep (`model=mlp`) is a
fixed value every trial gets. No side effects: parsing only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence, cast

from orchestrator.errors import ConfigError

if TYPE_CHECKING:
    from hydra.core.override_parser.types import Override
    from optuna.distributions import BaseDistribution
    from optuna.trial import Trial


@dataclass(frozen=True)
class SearchSpace:
    """What the sweeper asks Optuna for (distributions) and what every trial gets as it is (fixed)."""

    distributions: Mapping[str, BaseDistribution]
    fixed: Mapping[str, str]
    """key -> the override's value, as typed."""


def parse_search_space(params: Mapping[str, str], arguments: Sequence[str]) -> SearchSpace:
    """hydra.sweeper.params then the command line's overrides (which win for the same key) as a SearchSpace."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    lines = [f"{key}={value}" for key, value in params.items()] + list(arguments)
    try:
        parsed = OverridesParser.create().parse_overrides(lines)
    except HydraException as error:
        raise ConfigError([f"hydra/sweeper=optuna cannot read the overrides: {error}"]) from None
    distributions: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for override in parsed:
        key = override.get_key_element()
        distributions.pop(key, None)
        fixed.pop(key, None)
        if override.is_sweep_override():
            distributions[key] = distribution(override)
        else:
            fixed[key] = override.get_value_element_as_str()
    return SearchSpace(distributions, fixed)


def distribution(override: Override) -> BaseDistribution:
    """The Optuna distribution of one sweep override (choice, range, interval, with a `log` tag)."""
    from hydra.core.override_parser.types import IntervalSweep, RangeSweep, Transformer
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    if override.is_choice_sweep() or (isinstance(value, RangeSweep) and value.shuffle):
        # Transformer.encode gives each choice as it is written in an override: str, int, float or bool
        choices = [cast("str | int | float | bool", choice) for choice in override.sweep_iterator(Transformer.encode)]
        return CategoricalDistribution(choices)
    if isinstance(value, RangeSweep) and value.start is not None and value.stop is not None:
        start, stop, step = value.start, value.stop, value.step
        if any(isinstance(number, float) for number in (start, stop, step)):
            return FloatDistribution(float(start), float(stop), step=float(step))
        return IntDistribution(int(start), int(stop), step=int(step))
    if isinstance(value, IntervalSweep) and value.start is not None and value.end is not None:
        log = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log)
        return FloatDistribution(float(value.start), float(value.end), log=log)
    raise ConfigError(
        [
            f"{override.input_line} is not a search space hydra/sweeper=optuna knows: use interval(a, b), "
            f"tag(log, interval(a, b)), choice(...) or range(start, stop, step)"
        ]
    )


def suggest(trial: Trial, name: str, space: BaseDistribution) -> Any:
    """Ask `trial` for a value of `name` from `space` (a value enqueued for the trial is taken as it is)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(space, CategoricalDistribution):
        return trial.suggest_categorical(name, space.choices)
    if isinstance(space, IntDistribution):
        return trial.suggest_int(name, space.low, space.high, step=space.step, log=space.log)
    assert isinstance(space, FloatDistribution)  # the three kinds `distribution` makes
    return trial.suggest_float(name, space.low, space.high, step=space.step, log=space.log)


def trial_overrides(params: Mapping[str, Any], fixed: Mapping[str, str]) -> tuple[str, ...]:
    """A trial's overrides: the values Optuna chose, then the fixed ones."""
    overlap = sorted(set(params) & set(fixed))
    if overlap:
        raise ConfigError([f"{', '.join(overlap)}: both swept and fixed; give each key one value or one sweep"])
    return tuple(f"{name}={value}" for name, value in {**params, **fixed}.items())


def grid(space: Mapping[str, BaseDistribution]) -> dict[str, list[Any]]:
    """Every value of each distribution, for Optuna's GridSampler: choices and stepped ranges only."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    values: dict[str, list[Any]] = {}
    for name, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            values[name] = list(dist.choices)
        elif isinstance(dist, (IntDistribution, FloatDistribution)) and dist.step is not None and not dist.log:
            count = int(round((dist.high - dist.low) / dist.step)) + 1
            values[name] = [dist.low + index * dist.step for index in range(count)]
        else:
            raise ConfigError(
                [f"{name}: the grid sampler needs choice(...) or range(start, stop, step), not an interval"]
            )
    return values
