"""The configuration reference renderer: pure, and its Markdown survives the table and HTML syntax."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from orchestrator.config import reference


def test_rendering_the_reference_imports_no_heavy_library():
    code = (
        "import sys\nfrom orchestrator.config.reference import reference_markdown\nreference_markdown()\n"
        "print(','.join(m for m in ['ray', 'mlflow', 'torch', 'hydra', 'pynvml'] if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "", f"rendering the reference pulled in: {loaded}"


def test_the_module_itself_names_no_heavy_import():
    # omegaconf arrives through schema.py (MISSING) only; the renderer must not depend on it by itself
    tree = ast.parse(Path(reference.__file__).read_text())
    names = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    names |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert not names & {"ray", "mlflow", "torch", "omegaconf", "hydra"}


def test_defaults_are_written_as_in_a_config():
    assert [
        reference.format_value(value) for value in (None, True, False, [32, 64], {}, {"_target_": None}, 0.003, "???")
    ] == ["null", "true", "false", "[32, 64]", "{}", "{_target_: null}", "0.003", reference.REQUIRED]


def test_descriptions_keep_their_words_in_a_table_cell():
    text = reference._escape("to <log_dir>/rank_<R> | the `a|b` and `_target_` keys, data._target_")
    assert text == r"to &lt;log\_dir&gt;/rank\_&lt;R&gt; \| the `a\|b` and `_target_` keys, data.\_target\_"


def test_the_reference_has_a_table_per_section_and_option():
    titles = [table.title for table in reference.reference_tables()]
    assert titles[0] == "Top-level keys"
    for expected in ("`scaling`", "`model=cnn`", "`model=target` (your own)", "`data=tokens`", "`sweep`"):
        assert expected in titles
    assert titles[-1].startswith("`hydra.launcher`"), "the launcher plugin's keys are missing"
    markdown = reference.reference_markdown()
    assert markdown.count("| key | default | description |") == len(titles)
