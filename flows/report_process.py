"""The run's HTML report, written by a child process of the run that ends with it.

The report reads the run's Parquet outputs into pandas: about 2.5 KB of memory per patient at
its peak (250 MB at 100,000 patients, measured), which a flow process would keep as its
high-water mark for the rest of its life. In a child process that memory goes back to the
system when the report is written, the flow process stays as small at 100,000 patients as at
10,000, and a report that crashes cannot take the run's process with it. The child watches
the run (:func:`echo_batch.run.parent_watch.die_with_parent`), so it ends with a killed run too.

Run as ``python -m flows.report_process OUT --parent PID [--kernel-signal]`` (by
:func:`write_report_in_child` only).
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from pathlib import Path

from echo_batch.run.parent_watch import add_watch_arguments, die_with_parent, watch_arguments


def write_report_in_child(out: Path, logger: logging.Logger | logging.LoggerAdapter) -> bool:
    """Write ``OUT/report/`` in a child process; a failure is logged as a warning, never raised.

    The child's own log lines (where the report is, or why it was not written) go to this
    process's standard error.

    Returns:
        True when the report was written.
    """
    try:
        code = subprocess.run(
            [sys.executable, "-m", __name__, str(out), *watch_arguments()], check=False
        ).returncode
    except OSError as exc:
        logger.warning("report not written: cannot start its process: %s", exc)
        return False
    if code != 0:
        logger.warning("report not written (its process exited with code %d)", code)
        return False
    return True  # the child logged where


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="the HTML report of an echo-batch run")
    parser.add_argument("out", type=Path)
    add_watch_arguments(parser)
    args = parser.parse_args(argv)
    die_with_parent(args.parent, kernel_signal=args.kernel_signal)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)-8s %(message)s", datefmt="%H:%M:%S"
    )
    from echo_batch.report import write_report_safely

    sys.exit(0 if write_report_safely(args.out) is not None else 1)


if __name__ == "__main__":
    main()
