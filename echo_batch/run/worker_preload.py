"""Dask worker preload: import the chunk code (and torch for model runs) when a worker starts.

Named in ``LocalCluster(preload=...)`` by the flow, so that the imports (about 0.5 s per worker, 1 s
with torch) overlap with the flow's discovery instead of delaying each worker's first chunk. A local
worker also ends with the run that started it, even when the run is killed (``RUN_PID_KEY``).
torch is imported when the Dask config key ``echo-batch.preload-torch`` is true (the flow sets it
for model runs). External clusters can use it too:
``dask worker --preload echo_batch.run.worker_preload``.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

PRELOAD_TORCH_KEY = "echo-batch.preload-torch"
RUN_PID_KEY = "echo-batch.run-pid"
"""Dask config key: pid of the run that started this local worker (the worker's parent), which
the worker watches to end with it (:mod:`echo_batch.run.parent_watch`); unset for workers of an
external cluster."""


def dask_setup(worker) -> None:
    """Called by Dask once per worker at start-up."""
    import dask

    run_pid = dask.config.get(RUN_PID_KEY, None)
    if run_pid is not None:
        from echo_batch.run.parent_watch import die_with_parent

        die_with_parent(int(run_pid))

    import echo_batch.run.chunk  # noqa: F401

    if dask.config.get(PRELOAD_TORCH_KEY, True):
        import torch  # noqa: F401

    logger.debug("worker %s: modules imported", worker.address)
