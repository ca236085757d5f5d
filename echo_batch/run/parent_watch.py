"""End a helper process of a run when the run's process ends, however it ends.

A run starts helper processes (the Prefect API server, the local Dask workers). When the run ends
normally it stops them; when it is killed (SIGKILL, the out-of-memory killer, a lost session) it
cannot, and a helper that does not notice is re-parented to init and lives on, holding its port
and memory; every crashed nightly run added one Prefect server.

A helper calls :func:`die_with_parent` first thing. Two mechanisms, either one suffices:

- Linux's parent-death signal (``prctl(PR_SET_PDEATHSIG)``): the kernel sends ``SIGTERM`` when
  the thread that started the helper ends, even while the helper is busy in C code. Used only
  when the parent says it started the helper from its main thread, since a signal on the end of a
  short-lived thread would stop a healthy helper (see ``man 2 PR_SET_PDEATHSIG``);
- a watch thread that compares ``os.getppid()`` with the run's pid every half second (a process
  whose parent died is re-parented), on every platform.

On either, the helper sends itself ``SIGTERM`` (uvicorn and Dask shut down cleanly on it) and
ends with ``os._exit`` after a grace period if it is still there. A parent that died before the
helper got this far is noticed at once.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import sys
import threading
import time

logger = logging.getLogger(__name__)

POLL_S = 0.5
"""How often the watch thread checks the parent."""
GRACE_S = 5.0
"""Time a helper gets to shut down after its parent ended before it is ended hard."""
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent_pid: int, *, kernel_signal: bool = False) -> None:
    """Make this process end soon after ``parent_pid``, its parent, ends.

    Args:
        parent_pid: pid of the process that started this one (the run).
        kernel_signal: also ask Linux for ``SIGTERM`` when the parent thread that started this
            process ends; only when that thread lives as long as the parent (its main thread).
    """
    if kernel_signal and sys.platform.startswith("linux"):
        _set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != parent_pid:  # the parent is gone already (before the signal was set)
        _end(parent_pid)
        return
    threading.Thread(target=_watch, args=(parent_pid,), name="parent-watch", daemon=True).start()


def watch_arguments() -> list[str]:
    """Command-line arguments that tell a helper started now, by this thread, whom to watch.

    ``--parent <this pid>``, and ``--kernel-signal`` when this is the main thread (see the
    module); a helper's parser takes them with :func:`add_watch_arguments`.
    """
    arguments = ["--parent", str(os.getpid())]
    if threading.current_thread() is threading.main_thread():
        arguments.append("--kernel-signal")
    return arguments


def add_watch_arguments(parser: argparse.ArgumentParser) -> None:
    """``--parent PID`` (required) and ``--kernel-signal`` (see :func:`watch_arguments`)."""
    parser.add_argument("--parent", type=int, required=True, help="pid of the run")
    parser.add_argument(
        "--kernel-signal", action="store_true", help="also PR_SET_PDEATHSIG (Linux)"
    )


def parent_is_gone(parent_pid: int) -> bool:
    """True when this process's parent is no longer ``parent_pid`` (it ended; we were adopted)."""
    return os.getppid() != parent_pid


def _watch(parent_pid: int) -> None:
    while not parent_is_gone(parent_pid):
        time.sleep(POLL_S)
    _end(parent_pid)


def _end(parent_pid: int) -> None:
    """SIGTERM to this process; ``os._exit`` after :data:`GRACE_S` if it still runs."""
    logger.warning("pid %d: the run (pid %d) ended; shutting down", os.getpid(), parent_pid)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(GRACE_S)
    os._exit(1)


def _set_parent_death_signal(signum: int) -> None:
    """``prctl(PR_SET_PDEATHSIG, signum)``; a failure only leaves the watch thread to do it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
            logger.debug("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    except (OSError, AttributeError) as exc:
        logger.debug("prctl unavailable: %s", exc)
