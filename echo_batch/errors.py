"""Exceptions raised for bad input or unsafe output. Each names the offending file and the reason.

All of them pickle (Dask and Prefect ship them between processes): unpickling rebuilds the
exception from its ``args`` and attributes without calling a subclass ``__init__``, whose
signature is not the message-only one :class:`BaseException` assumes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _rebuild(cls: type[BaseException], args: tuple[Any, ...]) -> BaseException:
    """An instance of ``cls`` holding ``args``, ``__init__`` not called (pickle sets the state)."""
    exc = cls.__new__(cls)
    exc.args = args
    return exc


class EchoBatchError(Exception):
    """Base class of the project's expected errors."""

    def __reduce__(self) -> tuple[Any, ...]:
        """Picklable whatever the subclass ``__init__`` takes: type, ``args`` and attributes."""
        return _rebuild, (type(self), self.args), self.__dict__ or None


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


class OutputError(EchoBatchError):
    """A file cannot be written safely under ``OUT``.

    Args:
        path: the offending path under ``OUT``.
        reason: what is wrong with it, in words a user can act on.
    """

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class OrchestrationError(EchoBatchError):
    """A service the run needs (its Prefect API, its Dask cluster) could not be started."""
