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
    """conf/ + overrides -> the validated JobConfig (Hydra's own errors for unknown keys and options)."""
    from hydra import compose, initialize_config_dir

    from orchestrator.config.load import load_config
    from orchestrator.config.store import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    return load_config(cfg, base_dir)
