"""Code version recorded in bundles and run records."""

from __future__ import annotations

import subprocess
from functools import cache
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version
from pathlib import Path


@cache
def code_version() -> str:
    """Package version, plus the git commit in a checkout (e.g. ``0.1.0+g1a2b3c4``)."""
    try:
        base = _dist_version("echo-batch")
    except PackageNotFoundError:
        base = "0+unknown"
    repo = Path(__file__).resolve().parent.parent
    if not (repo / ".git").exists():
        return base
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return base
    return f"{base}+g{out.stdout.strip()}"
