"""Cohort report of a run: ``echo-batch report OUT`` writes ``OUT/report/index.html``.

Modules: :mod:`~echo_batch.report.stats` (numbers, pandas), :mod:`~echo_batch.report.plots`
(PNG plots, matplotlib Agg), :mod:`~echo_batch.report.loops` (cine-loop figures: frame offsets,
EF on detected against annotated frames), :mod:`~echo_batch.report.measures` (LA volume, contour
GLS, FAC, long-axis shortening: distributions and agreement with the expert masks),
:mod:`~echo_batch.report.gallery` (worst cases with contours, landmarks and disks, and the loops'
volume curves), :mod:`~echo_batch.report.html` (the page), :mod:`~echo_batch.report.build` (puts
them together). Importing this package imports neither matplotlib nor torch.
"""

from __future__ import annotations

import logging
from pathlib import Path


def write_report(
    out: Path, *, worst: int = 6, data: Path | None = None, recompute: bool = True
) -> Path:
    """Write ``OUT/report/``; see :func:`echo_batch.report.build.write_report`."""
    from echo_batch.report.build import write_report as build

    return build(out, worst=worst, data=data, recompute=recompute)


def write_report_safely(out: Path, logger: logging.Logger | logging.LoggerAdapter | None = None):
    """:func:`write_report` for the end of a run: a failure is logged as a warning, never raised.

    Args:
        out: the run's OUT folder.
        logger: where to log (a Prefect run logger in the flow); this module's logger when None.

    Returns:
        Path of ``index.html``, or None when the report could not be written.
    """
    log = logger or logging.getLogger(__name__)
    try:
        index = write_report(Path(out))
    except Exception as exc:  # the run's results are written already; the report is extra
        log.warning("report not written: %s: %s", type(exc).__name__, exc)
        return None
    log.info("report: %s", index)
    return index


__all__ = ["write_report", "write_report_safely"]
