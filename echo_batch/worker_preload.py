"""Dask worker preload for model runs: import torch and the chunk code when a worker starts.

Named in ``LocalCluster(preload=...)`` by the flow, so that the imports (about 1 s per worker
here) overlap with the flow's discovery instead of delaying each worker's first chunk. External
clusters can use it too: ``dask worker --preload echo_batch.worker_preload``.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def dask_setup(worker) -> None:
    """Called by Dask once per worker at start-up."""
    import torch  # noqa: F401

    import echo_batch.pipeline  # noqa: F401

    logger.debug("worker %s: echo_batch.pipeline and torch imported", worker.address)
