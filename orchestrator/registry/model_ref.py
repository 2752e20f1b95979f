"""What `orchestrator export` exports: a run id, `models:/NAME@ALIAS` or `models:/NAME/VERSION` (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from orchestrator.registry.errors import RegistryError

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
"""MLflow's run ids: 32 lowercase hex digits."""
USAGE = "RUN_ID (32 hex digits), models:/NAME@ALIAS or models:/NAME/VERSION"


@dataclass(frozen=True)
class ModelRef:
    """A parsed reference: exactly one of run_id or name is set; a name comes with an alias or a version."""

    run_id: Optional[str] = None
    name: Optional[str] = None
    alias: Optional[str] = None
    version: Optional[int] = None

    def file_stem(self, version: Optional[int]) -> str:
        """A file-name-safe stem: run-<first 8 hex digits>, or NAME-v<VERSION> with the version resolved."""
        if self.run_id is not None:
            return f"run-{self.run_id[:8]}"
        return f"{_safe(str(self.name))}-v{version if version is not None else self.version}"

    def __str__(self) -> str:
        if self.run_id is not None:
            return f"run {self.run_id}"
        return f"models:/{self.name}@{self.alias}" if self.alias else f"models:/{self.name}/{self.version}"


def parse_model_ref(text: str) -> ModelRef:
    """Parse the export command's model argument; the error names the forms that are valid."""
    if RUN_ID.match(text):
        return ModelRef(run_id=text)
    if not text.startswith("models:/"):
        raise RegistryError(f"{text!r} is not a model reference: use {USAGE}")
    rest = text[len("models:/") :]
    if "@" in rest:
        name, _, alias = rest.rpartition("@")
        if name and alias and "/" not in name:
            return ModelRef(name=name, alias=alias)
    else:
        name, _, version = rest.partition("/")
        if name and version.isdigit() and int(version) >= 1:
            return ModelRef(name=name, version=int(version))
        if name and version == "latest":
            raise RegistryError(f"{text!r}: name the version or an alias (latest is ambiguous to export); use {USAGE}")
    raise RegistryError(f"{text!r} is not a model reference: use {USAGE}")


def _safe(name: str) -> str:
    return re.sub(r"[^\w.\-]+", "_", name)
