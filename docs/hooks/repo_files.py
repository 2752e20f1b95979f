"""MkDocs hook: show a file of the repository that lives outside docs/ (benchmarks/RESULTS.md) as a page.

A page holds `<!-- include: PATH -->`, a fallback for readers of the Markdown source (a link to the file),
and `<!-- end include -->`; the built page shows the file itself instead of the fallback. The fallback's
link leaves docs/, which MkDocs' strict link check would refuse, so it is removed before the page renders.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INCLUDE = re.compile(r"<!-- include: (?P<path>\S+) -->.*?<!-- end include -->", re.DOTALL)


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Replace every include block with the named file's text (a path inside the repository)."""
    return INCLUDE.sub(lambda match: _read(match.group("path")), markdown)


def _read(relative: str) -> str:
    path = (ROOT / relative).resolve()
    if not path.is_relative_to(ROOT) or not path.is_file():
        raise ValueError(f"include: {relative} is not a file of the repository")
    return path.read_text()
