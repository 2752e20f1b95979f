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
    keys = range(len(node)) if isinstance(node, ListConfig) else node.keys()
    for key in keys:
        if OmegaConf.is_missing(node, key):
            continue
        child = node[key]
        if isinstance(child, (DictConfig, ListConfig)):
            _clear_readonly(child)


def register_configs() -> None:
    """Register the job schema and the `model` / `data` group schemas (idempotent)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(name=PRIMARY_SCHEMA, node=_writable(JobConfig))
    # the group schemas live under schema/, so `model` and `data` list only the YAML options users pick
    for name, schema in MODEL_SCHEMAS.items():
        store.store(group="schema/model", name=name, node=_writable(schema))
    for name, schema in DATA_SCHEMAS.items():
        store.store(group="schema/data", name=name, node=_writable(schema))
