"""The configuration reference (docs/configuration.md) rendered from the typed schema.

Keys and defaults come from the dataclasses of `orchestrator.config.schema`, descriptions from the
docstring written under each field, so the page cannot drift from the code. No ray, mlflow, torch,
omegaconf or hydra import here (schema.py imports none either): building
the docs imports no Ray, MLflow or torch. The launcher plugin's module imports Hydra, so its config is
read with `ast` from its source instead.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
from pathlib import Path
from typing import Any, Iterator, Optional

from orchestrator.config import schema

GROUP_OPTIONS: dict[str, dict[str, type]] = {"model": dict(schema.MODEL_SCHEMAS), "data": dict(schema.DATA_SCHEMAS)}
"""The built-in options of each config group (`model=cnn`, `data=digits`), each with keys of its own."""
OWN_CODE_OPTIONS: dict[str, type] = {"model": schema.TargetModelConfig, "data": schema.TargetDataConfig}
"""The `target` option of each group: the user's own callable, named by `_target_`."""
OWN_CODE_KEYS = {"target": "_target_", "kwargs": "<key>"}
"""Fields of the own-code options that users write under another name: load_config moves `_target_` to
`target` and every other key of the node to `kwargs`."""
LOADER_KEYS = ("batch_size", "num_workers")
"""Keys of the user's data node that stay the DataLoader's settings (load.LOADER_KEYS) instead of going to
the callable."""
REQUIRED = "(required)"
"""What the default column says for a key that has no default (Hydra's `???`)."""
LAUNCHER_MODULE = "hydra_plugins.orchestrator_ray_launcher.config"
LAUNCHER_CLASS = "RayLauncherConfig"
LAUNCHER_PREFIX = "hydra.launcher"


@dataclasses.dataclass(frozen=True)
class Row:
    """One key of the reference: where it lives, its default as written in a config, what it does."""

    key: str
    default: str
    description: str
    option: Optional[str] = None
    """The group option the key belongs to (`model=cnn`), None for a key every config has."""


@dataclasses.dataclass(frozen=True)
class Table:
    """One section of the reference: a heading, the section's own docstring and its keys."""

    title: str
    intro: str
    rows: tuple[Row, ...]


def reference_markdown() -> str:
    """The configuration reference as Markdown: one table per config section and group option."""
    parts = []
    for table in reference_tables():
        parts.append(f"## {table.title}\n")
        if table.intro:
            parts.append(_escape(table.intro) + "\n")
        parts.append("| key | default | description |\n| --- | --- | --- |")
        parts.extend(_markdown_row(row) for row in table.rows)
        parts.append("")
    return "\n".join(parts)


def reference_tables() -> list[Table]:
    """Every documented key, grouped as on the page: top-level keys, then each section in schema order."""
    source = Path(schema.__file__).read_text()
    docs = field_docs(source)
    choices = default_options()
    top_level: list[Row] = []
    tables: list[Table] = []
    for section in dataclasses.fields(schema.JobConfig):
        value = _default(section)
        if section.name in GROUP_OPTIONS:
            choice = choices.get(section.name, REQUIRED)
            top_level.append(Row(section.name, choice, _doc(docs, schema.JobConfig, section.name)))
            tables.extend(_group_tables(section.name, docs, class_fields(source)))
        elif dataclasses.is_dataclass(value):
            tables.append(
                Table(f"`{section.name}`", _class_doc(type(value)), tuple(_field_rows(section.name, type(value), docs)))
            )
        else:
            top_level.append(Row(section.name, format_value(value), _doc(docs, schema.JobConfig, section.name)))
    tables.insert(0, Table("Top-level keys", _class_doc(schema.JobConfig), tuple(top_level)))
    launcher = launcher_table()
    if launcher is not None:
        tables.append(launcher)
    return tables


def _group_tables(group: str, docs: dict[tuple[str, str], str], declared: dict[str, list[str]]) -> Iterator[Table]:
    for option, option_type in GROUP_OPTIONS[group].items():
        yield Table(
            f"`{group}={option}`",
            _class_doc(option_type),
            tuple(_field_rows(group, option_type, docs, option=f"{group}={option}")),
        )
    own = OWN_CODE_OPTIONS[group]
    rows = []
    # the fields the class declares and the loader's keys: an inherited field such as test_fraction is
    # not a key of the user's node, whose other keys all go to the callable
    for row in _field_rows(group, own, docs, option=f"{group}=target"):
        name = row.key.rsplit(".", 1)[-1]
        if name not in declared.get(own.__name__, ()) and name not in LOADER_KEYS:
            continue
        if name in OWN_CODE_KEYS:
            # kwargs are free keys: nothing to default
            row = dataclasses.replace(
                row, key=f"{group}.{OWN_CODE_KEYS[name]}", default="" if name == "kwargs" else row.default
            )
        rows.append(row)
    rows.sort(key=lambda row: not row.key.endswith("._target_"))  # the one key every such node needs, first
    yield Table(f"`{group}=target` (your own)", _class_doc(own), tuple(rows))


def _field_rows(
    prefix: str, cls: type, docs: dict[tuple[str, str], str], option: Optional[str] = None
) -> Iterator[Row]:
    for field in dataclasses.fields(cls):
        if field.name == "name" and option:  # the option itself says it: `model=cnn` sets model.name=cnn
            continue
        yield Row(f"{prefix}.{field.name}", format_value(_default(field)), _doc(docs, cls, field.name), option)


def launcher_table() -> Optional[Table]:
    """The keys of hydra/launcher=ray from the plugin's source; None when the plugin is not importable."""
    try:
        spec = importlib.util.find_spec(LAUNCHER_MODULE)
    except ModuleNotFoundError:  # not even the hydra_plugins namespace: the package is not installed
        return None
    if spec is None or not spec.origin:
        return None
    source = Path(spec.origin).read_text()
    tree = ast.parse(source)
    docs = field_docs(source)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == LAUNCHER_CLASS:
            rows = tuple(
                Row(
                    f"{LAUNCHER_PREFIX}.{name}",
                    format_value(ast.literal_eval(value)),
                    docs.get((LAUNCHER_CLASS, name), ""),
                )
                for name, value in _class_assignments(node)
                if not name.startswith("_")
            )
            return Table(
                f"`{LAUNCHER_PREFIX}` (`hydra/launcher=ray`, the default for `-m`)",
                _first_paragraph(ast.get_docstring(node) or ""),
                rows,
            )
    return None


def _class_assignments(node: ast.ClassDef) -> Iterator[tuple[str, ast.expr]]:
    for statement in node.body:
        if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name) and statement.value:
            yield statement.target.id, statement.value


def default_options() -> dict[str, str]:
    """The option each group starts from (`model: cnn`), read from the defaults list of conf/config.yaml."""
    import yaml

    from orchestrator.config.compose import conf_dir

    defaults = yaml.safe_load((conf_dir() / "config.yaml").read_text()).get("defaults", [])
    return {
        group: option
        for entry in defaults
        if isinstance(entry, dict)
        for group, option in entry.items()
        if group in GROUP_OPTIONS
    }


def field_docs(source: str) -> dict[tuple[str, str], str]:
    """(class name, field) -> the docstring written under the field, from Python source."""
    docs = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        for field_node, following in zip(node.body, node.body[1:]):
            if (
                isinstance(field_node, ast.AnnAssign)
                and isinstance(field_node.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[(node.name, field_node.target.id)] = " ".join(following.value.value.split())
    return docs


def class_fields(source: str) -> dict[str, list[str]]:
    """Class name -> the fields its own body declares (not the inherited ones), from Python source."""
    return {
        node.name: [
            statement.target.id
            for statement in node.body
            if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)
        ]
        for node in ast.parse(source).body
        if isinstance(node, ast.ClassDef)
    }


def format_value(value: Any) -> str:
    """A default as it is written in a config or on the command line: null, false, [32, 64], {}."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {format_value(item)}" for key, item in value.items()) + "}"
    if value == "???":  # omegaconf.MISSING, compared by value so that omegaconf is not imported here
        return REQUIRED
    return str(value)


def _default(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def _doc(docs: dict[tuple[str, str], str], cls: type, name: str) -> str:
    for klass in cls.__mro__:  # a field documented on the base class (DataConfig.batch_size)
        if (klass.__name__, name) in docs:
            return docs[(klass.__name__, name)]
    return ""


def _class_doc(cls: type) -> str:
    return _first_paragraph(cls.__doc__ or "")


def _first_paragraph(text: str) -> str:
    # later paragraphs of a class docstring are about the code (how load_config types the node), not the keys
    return " ".join(text.strip().split("\n\n", 1)[0].split())


def _markdown_row(row: Row) -> str:
    where = f" (`{row.option}`)" if row.option else ""
    default = f"`{row.default}`" if row.default and row.default != REQUIRED else row.default
    return f"| `{row.key}`{where} | {default} | {_escape(row.description)} |"


def _escape(text: str) -> str:
    """Docstring text safe in a Markdown table cell: outside code spans, `<key>` must not read as an HTML
    tag, `_target_` not as emphasis, `|` not as a column break."""
    pieces = text.split("`")
    for index, piece in enumerate(pieces):
        if index % 2:  # inside a code span only the table's column break needs escaping
            pieces[index] = piece.replace("|", "\\|")
            continue
        piece = piece.replace("\\", "\\\\").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        for mark in ("*", "_", "|"):
            piece = piece.replace(mark, "\\" + mark)
        pieces[index] = piece
    return "`".join(pieces)
