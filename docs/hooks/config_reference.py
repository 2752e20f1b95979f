"""MkDocs hook: the configuration page's marker becomes the reference generated from the typed schema."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- configuration reference -->"


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Replace MARKER with `reference_markdown()`; pages without it are returned unchanged."""
    if MARKER not in markdown:
        return markdown
    # the site documents the checkout being built, not whatever copy of the package is installed
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from orchestrator.config.reference import reference_markdown

    return markdown.replace(MARKER, reference_markdown())
