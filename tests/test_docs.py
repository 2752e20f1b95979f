"""The documentation: the site builds strictly, the README's links resolve and its quick start is the two
make commands, and the generated configuration reference holds every key with the default Hydra composes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.config import reference, schema

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
ROW = re.compile(r"^\| `(?P<key>[^`]+)`(?: \(`(?P<option>[^`]+)`\))? \| (?P<default>[^|]*?) \|", re.MULTILINE)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site built as `make docs` builds it, into a folder of this module's own."""
    folder = tmp_path_factory.mktemp("site")
    # the banner Material prints about MkDocs 2.0 is noise in a failure message
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(folder),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    return folder


# the e2e tier (a CLI process), as tests/conftest.py would sort it if it could see the subprocess
@pytest.mark.e2e
@pytest.mark.slow
def test_the_site_builds_strictly_with_the_generated_pages(site):
    configuration = (site / "configuration" / "index.html").read_text()
    assert "<code>scaling.num_workers</code>" in configuration, "the configuration reference hook did not run"
    assert "configuration reference -->" not in configuration
    benchmarks = (site / "benchmarks" / "index.html").read_text()
    assert "Summary: the orchestrator against bare torchrun" in benchmarks, "benchmarks/RESULTS.md was not included"
    assert (site / "images" / "compare-accuracy.png").is_file()


def test_every_docs_page_is_in_the_nav():
    nav = set(re.findall(r"^\s*- [^:\n]+: (\S+\.md)$", (ROOT / "mkdocs.yml").read_text(), re.MULTILINE))
    pages = {path.name for path in (ROOT / "docs").glob("*.md")}
    assert nav == pages, (
        f"pages not in the nav: {sorted(pages - nav)}; nav entries without a page: {sorted(nav - pages)}"
    )


def _headings_slugs(markdown: str) -> set[str]:
    """Anchors of a page's headings as GitHub and MkDocs both spell them for plain words."""
    text = FENCE.sub("", markdown)
    slugs = set()
    for line in text.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            slugs.add(re.sub(r"\s+", "-", re.sub(r"[^\w\s-]", "", title)))
    return slugs


def test_every_link_and_image_of_the_readme_resolves():
    text = README.read_text()
    prose = re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))
    targets = LINK.findall(prose)
    assert targets, "no links found: the pattern no longer matches the README"
    broken = []
    for target in targets:
        if re.match(r"^[a-z]+:", target):  # http(s), mailto: not this repository's files
            continue
        path, _, anchor = target.partition("#")
        file = (ROOT / path) if path else README
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in _headings_slugs(file.read_text()):
            broken.append(f"{target}: {path or 'README.md'} has no heading #{anchor}")
    assert not broken, "README links that do not resolve:\n" + "\n".join(broken)


def _section(markdown: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", markdown, re.DOTALL | re.MULTILINE)
    assert match, f"no section '## {title}'"
    return match.group(1)


def _commands(markdown: str) -> list[list[str]]:
    """The `$ ...` lines of each console block, without their comments."""
    blocks = re.findall(r"^```console\n(.*?)^```", markdown, re.DOTALL | re.MULTILINE)
    return [
        [line[2:].split("#", 1)[0].strip() for line in block.splitlines() if line.startswith("$ ")] for block in blocks
    ]


def test_the_readme_is_a_landing_page_whose_quick_start_is_two_commands():
    text = README.read_text()
    assert len(text.splitlines()) < 300, "the README is the landing page: the manual belongs in docs/"
    blocks = _commands(_section(text, "Quick start"))
    assert blocks and blocks[0] == ["make run", "make test"]
    # the blocks after the first show real output of those commands, and nothing else is run
    assert {command for block in blocks for command in block} == {"make run", "make test"}
    assert "TORCH_INDEX_URL" in text and ".venv/bin/orchestrator" in text and "source .venv/bin/activate" in text


def _composed(overrides: list[str]) -> dict:
    """conf/ + overrides as Hydra composes them for a job, the hydra node included, without validation."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from orchestrator.config.compose import conf_dir
    from orchestrator.config.store import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    return OmegaConf.to_container(cfg, resolve=False, throw_on_missing=False)


def _expected_defaults() -> dict[tuple[str, str | None], str]:
    """(key, group option) -> the default as the reference writes it, from the composed configs."""
    import dataclasses

    base = _composed([])
    expected = {
        (f"hydra.launcher.{key}", None): reference.format_value(value)
        for key, value in base["hydra"]["launcher"].items()
        if not key.startswith("_")
    }
    for section in dataclasses.fields(schema.JobConfig):
        if section.name in reference.GROUP_OPTIONS:
            expected[(section.name, None)] = base["hydra"]["runtime"]["choices"][section.name]
            for option in [*reference.GROUP_OPTIONS[section.name], "target"]:
                node = _composed([f"{section.name}={option}"])[section.name]
                for key, value in node.items():
                    if key != "name":  # the option sets it
                        expected[(f"{section.name}.{key}", f"{section.name}={option}")] = reference.format_value(value)
        elif isinstance(base[section.name], dict) and section.name != "loss":
            for key, value in base[section.name].items():
                expected[(f"{section.name}.{key}", None)] = reference.format_value(value)
        else:
            expected[(section.name, None)] = reference.format_value(base[section.name])
    return expected


def test_the_configuration_reference_lists_every_key_with_its_composed_default():
    rows = {
        (row["key"], row["option"]): row["default"].strip("`") for row in ROW.finditer(reference.reference_markdown())
    }
    free_keys = {key for key in rows if key[0].endswith(".<key>")}  # your own model's keywords: no default
    expected = _expected_defaults()
    assert set(rows) - free_keys == set(expected), "keys missing from (-) or extra in (+) the reference: " + str(
        sorted(f"-{key}" for key in set(expected) - set(rows))
        + sorted(f"+{key}" for key in set(rows) - free_keys - set(expected))
    )
    wrong = {key: (rows[key], value) for key, value in expected.items() if rows[key] != value}
    assert not wrong, f"(key, option): (the reference's default, the composed one): {wrong}"


def test_every_key_of_the_reference_has_a_description():
    undocumented = [
        row["key"]
        for row in ROW.finditer(reference.reference_markdown())
        if not row.string[row.end() :].split("\n", 1)[0].strip(" |")
    ]
    assert not undocumented, f"write a docstring under these fields in schema.py: {undocumented}"
