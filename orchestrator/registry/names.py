"""Which registered-model names and aliases MLflow accepts (pure: checked before any store is reached)."""

from __future__ import annotations

import re
from typing import Optional

ALIAS_PATTERN = re.compile(r"^[\w\-]+$")
"""MLflow's alias characters: letters, digits, underscores and dashes."""
RESERVED_ALIAS = re.compile(r"^(latest|[vV]\d+)$", re.IGNORECASE)
"""`latest` and `v<number>` name versions in model URIs; MLflow refuses them as aliases."""
MAX_ALIAS_LENGTH = 255
NAME_FORBIDDEN = ("/", ":", "@")
"""MLflow refuses / and : in a name; @ would make models:/NAME@ALIAS ambiguous."""


def model_name_problem(name: str) -> Optional[str]:
    """What is wrong with `name` as a registered model's name, or None when MLflow takes it."""
    if not name.strip():
        return "must be a non-empty registered model name, e.g. digits-cnn"
    if name != name.strip():
        return "must not start or end with spaces"
    bad = [char for char in NAME_FORBIDDEN if char in name]
    if bad:
        return f"must not contain {' or '.join(repr(char) for char in bad)}; e.g. digits-cnn"
    return None


def alias_problem(alias: str) -> Optional[str]:
    """What is wrong with `alias` as a registered model alias, or None when MLflow takes it."""
    if not ALIAS_PATTERN.match(alias):
        return "use letters, digits, underscores and dashes only, e.g. candidate or champion"
    if RESERVED_ALIAS.match(alias):
        return "`latest` and v<number> are reserved by MLflow for versions; use e.g. candidate or champion"
    if len(alias) > MAX_ALIAS_LENGTH:
        return f"must be at most {MAX_ALIAS_LENGTH} characters"
    return None
