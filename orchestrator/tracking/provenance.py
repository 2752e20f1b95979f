"""Where a run came from: the git commit of the working directory, when there is one."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Optional


def git_commit(directory: Path) -> Optional[str]:
    """HEAD's commit of the git checkout holding `directory`, or None outside a checkout."""
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = completed.stdout.strip()
    return commit if completed.returncode == 0 and commit else None
