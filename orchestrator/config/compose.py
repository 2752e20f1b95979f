"""Compose a JobConfig from overrides the way `orchestrator train` does, for commands without a run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from orchestrator.config.schema import JobConfig

if TYPE_CHECKING:
    from omegaconf import DictConfig


def conf_dir() -> Path:
    """The YAML config groups: shipped inside the package, or `conf/` beside it in a source checkout."""
    package_dir = Path(__file__).resolve().parents[1]
    for candidate in (package_dir / "conf", package_dir.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"no conf/config.yaml near {package_dir}")


TARGET_GROUPS = ("model", "data")
"""Groups whose option `target` (conf/<group>/target.yaml) holds a `_target_` node of the user's."""


def with_target_options(overrides: Sequence[str]) -> list[str]:
    """`model._target_=X` alone picks the group option that has the key: model=target is put before it.

    The built-in options' schemas have no `_target_` key, so without the option Hydra would reject the
    override; an explicit choice of the group (`model=mynet` from --config-dir) is left as it is.
    """
    result = list(overrides)
    for group in TARGET_GROUPS:
        setting = [i for i, o in enumerate(result) if o.lstrip("+").startswith(f"{group}._target_=")]
        chooses = any(o.lstrip("+~").split("=", 1)[0] == group for o in result)
        if setting and not chooses:
            # just before the override, so it stays among the overrides (after flags such as -m)
            result.insert(setting[0], f"{group}=target")
    return result


MULTIRUN_FLAGS = ("-m", "--multirun")
CONFIG_DIR_FLAGS = ("--config-dir", "-cd")


def train_overrides(args: Sequence[str]) -> Optional[tuple[list[str], list[str]]]:
    """(overrides, extra config dirs) of `orchestrator train` arguments; None when they hold a Hydra flag
    other than -m and --config-dir (--help, --cfg, ...), which Hydra then handles on its own."""
    overrides: list[str] = []
    config_dirs: list[str] = []
    items = iter(args)
    for arg in items:
        if arg in MULTIRUN_FLAGS:
            continue
        if arg in CONFIG_DIR_FLAGS:
            config_dirs.append(next(items, ""))
        elif arg.startswith("--config-dir="):
            config_dirs.append(arg.split("=", 1)[1])
        elif arg.startswith("-"):
            return None
        else:
            overrides.append(arg)
    return overrides, config_dirs


def sweep_variants(overrides: Sequence[str]) -> list[list[str]]:
    """Override lists that together try every swept value once: the first value of every sweep, then each
    other value of one sweep with the first of the rest (`optim.lr=0.1,0.01` gives two lists). A sweep
    without listed values (Optuna's interval(...)) is left out: its trials are checked as they start."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    fixed: list[str] = []
    swept: list[tuple[int, str, list[str]]] = []
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        line = str(override.input_line)
        if not override.is_sweep_override():
            fixed.append(line)
            continue
        try:
            values = list(override.sweep_string_iterator())
        except Exception:  # an interval or another sweep that is sampled, not listed
            continue
        if values:
            swept.append((len(fixed), line.split("=", 1)[0], values))
            fixed.append(f"{swept[-1][1]}={values[0]}")
    variants = [fixed]
    for position, key, values in swept:
        for value in values[1:]:
            variants.append([*fixed[:position], f"{key}={value}", *fixed[position + 1 :]])
    return variants


def check_train_args(args: Sequence[str], base_dir: Path) -> None:
    """Compose and validate what `orchestrator train [-m] ...` will run (every swept value once) before Hydra
    starts it, so that a bad config exits 2 in our words and leaves no output folder behind."""
    from orchestrator.errors import ConfigError

    parsed = train_overrides(args)
    if parsed is None:
        return
    overrides, config_dirs = parsed
    problems: list[str] = []
    for variant in sweep_variants(overrides):
        try:
            compose_job(variant, base_dir, config_dirs)
        except ConfigError as error:
            problems.extend(problem for problem in error.problems if problem not in problems)
    if not problems and any(arg in MULTIRUN_FLAGS for arg in args):
        problems = multirun_problems(overrides, base_dir, config_dirs)
    if problems:
        raise ConfigError(problems)


def multirun_problems(overrides: Sequence[str], base_dir: Path, config_dirs: Sequence[str] = ()) -> list[str]:
    """What the sweep.* settings of `orchestrator train -m` need from the chosen hydra/sweeper and hydra/launcher."""
    from omegaconf import open_dict

    from orchestrator.config.load import load_config
    from orchestrator.sweep.optuna_settings import sweeper_problems

    first = sweep_variants(overrides)[0]
    cfg = _compose(first, config_dirs, with_hydra=True)
    choices = dict(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    job = load_config(cfg, base_dir)
    return sweeper_problems(
        job.sweep, str(choices.get("hydra/sweeper")), str(choices.get("hydra/launcher")), job.tracking.uri
    )


def compose_job(overrides: Sequence[str], base_dir: Path, config_dirs: Sequence[str] = ()) -> JobConfig:
    """conf/ + overrides -> the validated JobConfig; every config problem is a ConfigError (exit code 2).

    Unknown keys, unknown group options, malformed overrides and wrong types are said in our words
    (config.hydra_errors): the override, the key, what is valid, the closest valid name.
    """
    from orchestrator.config.load import load_config

    return load_config(_compose(overrides, config_dirs), base_dir)


def _compose(overrides: Sequence[str], config_dirs: Sequence[str], with_hydra: bool = False) -> DictConfig:
    """conf/ + overrides composed (with the `hydra` node when `with_hydra`); Hydra's errors in our words."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from orchestrator.config.hydra_errors import translate
    from orchestrator.config.store import register_configs
    from orchestrator.errors import ConfigError

    register_configs()
    search = (
        [f"hydra.searchpath=[{','.join('file://' + str(Path(d).resolve()) for d in config_dirs)}]"]
        if config_dirs
        else []
    )
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            return compose(
                config_name="config",
                overrides=[*with_target_options(overrides), *search],
                return_hydra_config=with_hydra,
            )
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError([translate(error, overrides)]) from None
