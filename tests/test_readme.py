"""Every command line the README and docs/ show for `orchestrator train` (and `plan`, `k8s`, `submit`, which
take the same overrides) composes into a valid config, and where the docs show a command rejected with
"invalid configuration", the problems listed are word for word the ones the command reports."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import pytest

from orchestrator.config.compose import check_train_args, compose_job, with_target_options
from orchestrator.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMANDS = ("train", "plan", "k8s", "submit")
OPTIONS = {
    "train": {"--cfg": 1, "--help": 0},  # Hydra's own flags: they print, the overrides beside them still count
    "plan": {"--json": 0},
    "k8s": {"--image": 1, "--namespace": 1, "--name": 1, "--secret": 1},
    "submit": {"--address": 1, "--no-wait": 0, "--working-dir": 1},
}
"""Each command's options that are not overrides, and how many values each takes."""
INVALID = "orchestrator: invalid configuration:"
SHELL_VARIABLE = re.compile(r"\$(\w+|\{\w+\})")


@dataclass(frozen=True)
class Shown:
    """One command line of a console block, with what the docs show it printing."""

    where: str
    command: str
    args: tuple[str, ...]
    workdir: str
    """Where it runs, from the `$ cd` lines before it in its section ("" = the repository's root)."""
    problems: Optional[tuple[str, ...]]
    """The problems the docs show it rejected with; None when they show no rejection."""


def console_blocks(text: str) -> Iterator[tuple[int, str, list[str]]]:
    """(line number of the fence, the heading above it, the block's lines without the fence's indentation)
    of each console block."""
    lines = text.splitlines()
    index, heading = 0, ""
    while index < len(lines):
        if lines[index].startswith("#"):
            heading = lines[index]
        fence = re.match(r"^(\s*)```(\w*)\s*$", lines[index])
        index += 1
        if not fence:
            continue
        indent, start, block = len(fence.group(1)), index, []
        while index < len(lines) and lines[index].strip() != "```":
            block.append(lines[index][indent:])
            index += 1
        index += 1
        if fence.group(2) == "console":
            yield start, heading, block


def shell_words(line: str) -> list[str]:
    """The words a POSIX shell passes to the command: variables expanded (outside single quotes) to a
    stand-in value, quotes removed, a comment and anything after a pipe or a second command dropped."""
    expanded, quoted = [], False
    for piece in re.split(r"('[^']*')", line):
        quoted = piece.startswith("'") and piece.endswith("'") and len(piece) > 1
        expanded.append(
            piece if quoted else SHELL_VARIABLE.sub(lambda m: f"stand_in_for_{m.group(1).strip('{}')}", piece)
        )
    words = shlex.split("".join(expanded), comments=True)
    for stop in ("|", "&&", ";", ">"):
        if stop in words:
            words = words[: words.index(stop)]
    return words


def shown_commands(page: Path) -> Iterator[Shown]:
    """Every `$ orchestrator <command> ...` line of the page's console blocks."""
    workdirs: dict[str, str] = {}
    for start, heading, block in console_blocks(page.read_text()):
        # a `cd` holds for the rest of its section, as for a reader who follows the section in one shell
        workdir = workdirs.get(heading, "")
        for offset, line in enumerate(block):
            if not line.startswith("$ "):
                continue
            words = shell_words(line[2:])
            if words[:1] == ["cd"]:
                workdir = workdirs[heading] = str(Path(workdir, words[1]))
            if words[:1] != ["orchestrator"] or len(words) < 2 or words[1] not in COMMANDS:
                continue
            output = []
            for following in block[offset + 1 :]:
                if following.startswith("$ "):
                    break
                output.append(following)
            problems = None
            if output and output[0] == INVALID:
                problems = tuple(item[4:] for item in output[1:] if item.startswith("  - "))
            where = f"{page.relative_to(ROOT)}:{start + offset + 1}"
            yield Shown(where, words[1], tuple(words[2:]), workdir, problems)


SHOWN = [shown for page in PAGES for shown in shown_commands(page)]


def overrides_of(shown: Shown) -> list[str]:
    """The command's arguments without its own options (and their values)."""
    options = OPTIONS[shown.command]
    result, items = [], iter(shown.args)
    for arg in items:
        name = arg.split("=", 1)[0]
        if name in options:
            for _ in range(options[name] if "=" not in arg else 0):
                next(items)
        elif arg.startswith("--") and shown.command != "train":
            raise AssertionError(f"{shown.where}: teach this test the option {arg} of orchestrator {shown.command}")
        else:
            result.append(arg)
    return result


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's project folder: the repository's examples, and the torchrun script that the docs call
    train.py, which stands for the reader's own script (an empty file here: only its path is checked)."""
    (tmp_path / "examples").symlink_to(ROOT / "examples", target_is_directory=True)
    (tmp_path / "train.py").write_text("# stands for the reader's own torchrun script\n")
    return tmp_path


def test_the_docs_show_commands_of_every_kind():
    # a guard on the parser: if it stopped finding commands, the test below would pass on nothing
    kinds = {shown.command for shown in SHOWN}
    assert kinds == set(COMMANDS), f"found commands of kinds {kinds}"
    assert sum(shown.command == "train" for shown in SHOWN) >= 20
    assert sum(shown.problems is not None for shown in SHOWN) >= 3, "the documented rejections are not found"


@pytest.mark.parametrize("shown", SHOWN, ids=[shown.where for shown in SHOWN])
def test_a_shown_command_composes_as_the_docs_say(shown: Shown, project: Path, monkeypatch):
    workdir = project / shown.workdir
    # --config-dir is taken from the working directory, as the command does
    monkeypatch.chdir(workdir)
    overrides = overrides_of(shown)
    try:
        if shown.command == "train":
            check_train_args(with_target_options(overrides), workdir)
        else:
            compose_job(overrides, workdir)
    except ConfigError as error:
        assert shown.problems is not None, f"{shown.where}: the docs show a command that is rejected: {error}"
        assert tuple(error.problems) == shown.problems, f"{shown.where}: the docs show other problems than it reports"
    else:
        assert shown.problems is None, f"{shown.where}: the docs show it rejected, but the config is valid"


def test_shell_words_expand_variables_outside_single_quotes_only():
    assert shell_words("orchestrator train \"+x={T:$HF_TOKEN}\" 'y=${a}' | kubectl apply -f -  # comment") == [
        "orchestrator",
        "train",
        "+x={T:stand_in_for_HF_TOKEN}",
        "y=${a}",
    ]
