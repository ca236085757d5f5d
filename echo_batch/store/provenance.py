"""Provenance of output rows: the settings that produced them, and refusing a mix.

Every patient row carries ``measure_config``, the settings that change the numbers (model,
CAMUS grid) as canonical JSON. A resumed run compares it with its own: a row of other settings is
never taken for this run's (see :class:`echo_batch.store.parts.OutputStore`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from echo_batch.errors import EchoBatchError

_ABSENT = object()


class ConfigMismatchError(EchoBatchError):
    """``OUT`` holds rows measured with other settings than this run's."""


def measure_config(model_id: str, camus_grid_mm: float | None, **settings: Any) -> str:
    """The settings that change a run's numbers, as canonical JSON (sorted keys).

    Args:
        model_id: bundle id (name and weight hash) or "gt".
        camus_grid_mm: grid of the CAMUS-compatible volumes in mm, or None for the native grid.
        settings: further settings that change the numbers (JSON values).

    Returns:
        E.g. ``{"camus_grid_mm": null, "model_id": "gt"}``; equal settings give equal strings
        (``camus_grid_mm`` 1 and 1.0 alike).

    Raises:
        TypeError: a setting is not a JSON value.
        ValueError: a setting is NaN or infinite.
    """
    grid = None if camus_grid_mm is None else float(camus_grid_mm)
    values = {**settings, "model_id": model_id, "camus_grid_mm": grid}
    return json.dumps(values, sort_keys=True, allow_nan=False)


def config_mismatch_message(out: Path, expected: str, stored: Mapping[str | None, int]) -> str:
    """One line naming how the stored settings differ from ``expected``.

    Args:
        out: the output folder.
        expected: this run's :func:`measure_config`.
        stored: other settings found in ``OUT`` (None: not recorded) and their patient counts.

    Returns:
        The differing keys with both values, the number of rows, and what to do.
    """
    want = json.loads(expected)
    differing: dict[str, set[str]] = {}
    unknown = 0
    for config, count in stored.items():
        have = _parse_config(config)
        if have is None:
            unknown += count
            continue
        for key in set(have) | set(want):
            if have.get(key, _ABSENT) != want.get(key, _ABSENT):
                differing.setdefault(key, set()).add(_show(have.get(key, _ABSENT)))
    details = [
        f"{key} {' or '.join(sorted(values))} in OUT, {_show(want.get(key, _ABSENT))} now"
        for key, values in sorted(differing.items())
    ]
    if unknown:
        details.append(f"{unknown} without recorded settings")
    return (
        f"{out}: {sum(stored.values())} patient row(s) were measured with other settings "
        f"({'; '.join(details)}); use --no-resume to replace them, or another --out"
    )


def _parse_config(config: str | None) -> dict[str, Any] | None:
    try:
        value = json.loads(config) if config is not None else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _show(value: object) -> str:
    return "(absent)" if value is _ABSENT else json.dumps(value)
