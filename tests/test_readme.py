"""The README's config table lists every key with its real default."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

from orchestrator.config import schema

README = Path(__file__).resolve().parents[1] / "README.md"
GROUP_OPTIONS = {"model": schema.MODEL_SCHEMAS, "data": schema.DATA_SCHEMAS}


def field_docs() -> dict[tuple[str, str], str]:
    """(class name, field) -> the docstring written under the field in schema.py."""
    tree = ast.parse(Path(schema.__file__).read_text())
    docs = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        body = node.body
        for field_node, following in zip(body, body[1:]):
            if (isinstance(field_node, ast.AnnAssign) and isinstance(following, ast.Expr)
                    and isinstance(following.value, ast.Constant) and isinstance(following.value.value, str)):
                docs[(node.name, field_node.target.id)] = " ".join(following.value.value.split())
    return docs


def _default(field: dataclasses.Field):
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def _doc(docs, cls, name):
    for klass in cls.__mro__:
        if (klass.__name__, name) in docs:
            return docs[(klass.__name__, name)]
    return ""


def expected_rows() -> list[str]:
    """One markdown row per key: `key` | `default` | description (group options get their own rows)."""
    docs, rows = field_docs(), []
    for section in dataclasses.fields(schema.JobConfig):
        if section.name not in GROUP_OPTIONS and not dataclasses.is_dataclass(_default(section)):
            rows.append(f"| `{section.name}` | `{_default(section)}` | {_doc(docs, schema.JobConfig, section.name)} |")
            continue
        options = GROUP_OPTIONS.get(section.name)
        classes = list(options.items()) if options else [(None, section.default_factory)]
        for option, cls in classes:
            for field in dataclasses.fields(cls):
                if field.name == "name" and option:
                    continue
                where = f" (`{section.name}={option}`)" if option else ""
                value = json.dumps(_default(field)) if not isinstance(_default(field), str) else _default(field)
                rows.append(f"| `{section.name}.{field.name}`{where} | `{value}` | {_doc(docs, cls, field.name)} |")
    return rows


def test_every_config_key_and_default_is_in_the_readme():
    text = README.read_text()
    missing = [row for row in expected_rows() if row not in text]
    assert not missing, "README config table is out of date; these rows are expected:\n" + "\n".join(missing)


def test_quick_start_is_the_two_make_commands():
    text = README.read_text()
    assert "make run" in text and "make test" in text
