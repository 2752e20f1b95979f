"""The only ConfigStore calls: register the typed schemas Hydra composes the YAML groups onto."""

from __future__ import annotations

from omegaconf import DictConfig, ListConfig, OmegaConf

from orchestrator.config.schema import DATA_SCHEMAS, MODEL_SCHEMAS, JobConfig

PRIMARY_SCHEMA = "orchestrator_schema"


def _writable(schema: type) -> DictConfig:
    """A structured config of a frozen dataclass that Hydra may still override.

    OmegaConf marks every container of a frozen dataclass read-only, which would reject command-line
    overrides; clearing the flags keeps the type checks while `OmegaConf.to_object` still builds the
    frozen dataclasses at the end.
    """
    node = OmegaConf.structured(schema)
    _clear_readonly(node)
    return node


def _clear_readonly(node: DictConfig | ListConfig) -> None:
    OmegaConf.set_readonly(node, None)
    # a list is indexed by position, a dict by its keys (read lazily, one child at a time, as they are cleared)
    if isinstance(node, ListConfig):
        children = (node[index] for index in range(len(node)) if not OmegaConf.is_missing(node, index))
    else:
        children = (node[key] for key in node.keys() if not OmegaConf.is_missing(node, key))
    for child in children:
        if isinstance(child, (DictConfig, ListConfig)):
            _clear_readonly(child)


def register_configs() -> None:
    """Register the job schema, the `model` / `data` group schemas and the sweep plugins' configs (idempotent)."""
    # the launcher plugin stores its own config (any Hydra app can use it); importing it here makes sure it
    # is there before the first composition, whenever Hydra scans its plugins
    from hydra.core.config_store import ConfigStore

    import hydra_plugins.orchestrator_ray_launcher.config  # noqa: F401

    store = ConfigStore.instance()
    store.store(group="hydra/sweeper", name="optuna", node=_optuna_config(), provider="orchestrator")
    store.store(name=PRIMARY_SCHEMA, node=_writable(JobConfig))
    # the group schemas live under schema/, so `model` and `data` list only the YAML options users pick
    for name, schema in MODEL_SCHEMAS.items():
        store.store(group="schema/model", name=name, node=_writable(schema))
    for name, schema in DATA_SCHEMAS.items():
        store.store(group="schema/data", name=name, node=_writable(schema))


class OptunaMissing:
    """Stands in for the Optuna sweeper when Optuna is not installed: says how to install it."""

    def __init__(self, **_config: object) -> None:
        from orchestrator.errors import ConfigError

        raise ConfigError(
            [
                "hydra/sweeper=optuna needs Optuna 4, in the `sweep` extra: pip install 'orchestrator[sweep]' "
                "(make install-dev installs it)"
            ]
        )


def _optuna_config() -> DictConfig:
    """hydra/sweeper=optuna: the plugin's own config, its direction and storage following sweep.direction and
    sweep.storage (a different hydra.sweeper.direction or .storage given on its own is rejected as a conflict).

    The plugin registers its own entry whenever Hydra scans the plugins (the scan runs every plugin
    module again), which happens once per process, in Plugins.instance(): scanning first makes this
    entry the one that stays.
    """
    import importlib.util

    from hydra.core.plugins import Plugins

    Plugins.instance()
    if importlib.util.find_spec("optuna") is None:  # the optional `sweep` extra is not installed
        return OmegaConf.create({"_target_": f"{__name__}.{OptunaMissing.__name__}"})
    from hydra_plugins.orchestrator_optuna_sweeper.config import OptunaSweeperConfig

    node = OmegaConf.structured(OptunaSweeperConfig)
    node.direction = "${sweep.direction}"
    node.storage = "${sweep.storage}"
    return node
