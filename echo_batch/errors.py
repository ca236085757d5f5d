"""Exceptions raised for bad input. Each names the offending file and the reason."""

from __future__ import annotations

from pathlib import Path


class EchoBatchError(Exception):
    """Base class of the project's expected errors."""


class InputError(EchoBatchError):
    """A data file is unusable.

    Args:
        path: offending file.
        reason: what is wrong with it, in words a user can act on.
    """

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class CfgError(InputError):
    """An ``Info_*.cfg`` file is unreadable or holds a bad value."""
