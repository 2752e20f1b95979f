"""Compose a JobConfig from overrides the way `orchestrator train` does, for commands without a run."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from orchestrator.config.schema import JobConfig


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


def compose_job(overrides: Sequence[str], base_dir: Path) -> JobConfig:
    """conf/ + overrides -> the validated JobConfig; every config problem is a ConfigError (exit code 2).

    Unknown keys, unknown group options, malformed overrides and wrong types carry Hydra's and
    OmegaConf's own wording, plus the underlying reason.
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from orchestrator.config.load import load_config
    from orchestrator.config.store import register_configs
    from orchestrator.errors import ConfigError

    register_configs()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            cfg = compose(config_name="config", overrides=with_target_options(overrides))
    except (HydraException, OmegaConfBaseException) as error:
        message = " ".join(str(error).split())
        if error.__cause__ is not None:  # e.g. "Value 'abc' ... could not be converted to Integer"
            message += f" ({str(error.__cause__).splitlines()[0]})"
        raise ConfigError([message]) from None
    return load_config(cfg, base_dir)
