"""Hydra's and OmegaConf's composition errors in the orchestrator's words.

An unknown key, a value of the wrong type or a missing group option is a config error like any
other: one line that names the override, the key and what is valid, with "did you mean" for a near
miss, never a traceback and never Hydra's advice to append with `+` to a fixed schema.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from typing import Any, Optional, Sequence

from orchestrator.config import schema

_KEY_NOT_IN = re.compile(r"Key '([^']+)' (?:not in '([^']+)'|is not in struct)")
_FULL_KEY = re.compile(r"full_key: (\S+)")
_CONVERT = re.compile(r"Value '(.*?)' (?:of type '\w+' could not be converted to (\w+)|is not a valid (bool))")
_MISSING_OPTION = re.compile(r"Could not find '([^']+)/([^']+)'")
_TYPE_WORDS = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false", "String": "a string"}


def _did_you_mean(name: str, candidates: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def schema_keys(path: str, type_name: Optional[str] = None) -> Optional[list[str]]:
    """The keys valid under dotted `path` of the job schema ('' for the top level); None where it is free-form.

    `type_name` names the dataclass when the composed option decides it (model=mlp: MlpConfig).
    """
    node: Any = getattr(schema, type_name, None) if type_name else None
    if node is None:
        node = schema.JobConfig
        for part in [p for p in path.split(".") if p]:
            fields = {f.name: f for f in dataclasses.fields(node)} if dataclasses.is_dataclass(node) else {}
            if part not in fields:
                return None
            factory = fields[part].default_factory
            default = factory() if callable(factory) else fields[part].default
            node = type(default) if dataclasses.is_dataclass(default) else None
    if not (isinstance(node, type) and dataclasses.is_dataclass(node)):
        return None
    return [field.name for field in dataclasses.fields(node) if not field.name.startswith("_")]


def unknown_key_problem(full_key: str, setting: str, type_name: Optional[str] = None) -> str:
    """`setting` names a key the schema does not have: say so, with the valid keys and the closest one."""
    parent, _, name = full_key.rpartition(".")
    keys = schema_keys(parent, type_name)
    where = parent or "the config"
    if keys is None:
        return f"{setting} is not valid: {where} has no key {name}"
    return f"{setting} is not valid: {where} has no key {name}{_did_you_mean(name, keys)}; its keys: {', '.join(keys)}"


def translate(error: BaseException, overrides: Sequence[str]) -> str:
    """One problem line for a composition error of Hydra or OmegaConf, naming the override that caused it."""
    text = " ".join(f"{error} {error.__cause__ or ''}".split())
    missing = _MISSING_OPTION.search(text)
    if missing:
        group, option = missing.groups()
        options = list(getattr(error, "options", None) or [])
        valid = f": use one of {', '.join(options)}{_did_you_mean(option, options)}" if options else ""
        return f"{group}={option} is not valid{valid}"
    key_match = _KEY_NOT_IN.search(text)
    full_key = _FULL_KEY.search(text)
    if key_match and full_key:
        key = full_key.group(1)
        return unknown_key_problem(key, _setting(key, overrides), key_match.group(2))
    converted = _CONVERT.search(text)
    if converted and full_key:
        key = full_key.group(1)
        value, wanted, boolean = converted.groups()
        wanted = "Boolean" if boolean else wanted
        return f"{_setting(key, overrides, value)} is not valid: must be {_TYPE_WORDS.get(wanted, wanted)}"
    # anything else (a malformed override): Hydra's own words, minus its advice to append with `+`
    message = re.sub(r"\s*To append to your config use \+\S+", "", text).strip()
    return message.replace("Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.", "").strip()


def _setting(key: str, overrides: Sequence[str], value: Optional[str] = None) -> str:
    """The override as the user typed it (`+scaling.num_worker=2`), else key=value."""
    for override in overrides:
        name, _, typed = override.partition("=")
        if name.lstrip("+~") == key:
            return override
    return f"{key}={value}" if value is not None else key
