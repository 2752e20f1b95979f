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
            cfg = compose(config_name="config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as error:
        message = " ".join(str(error).split())
        if error.__cause__ is not None:  # e.g. "Value 'abc' ... could not be converted to Integer"
            message += f" ({str(error.__cause__).splitlines()[0]})"
        raise ConfigError([message]) from None
    return load_config(cfg, base_dir)
