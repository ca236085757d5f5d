"""How a cohort is cut into chunks: the unit of work, of progress and of loss when a worker dies."""

from __future__ import annotations


def chunked(items: list, size: int) -> list[list]:
    """Split a list into consecutive chunks of at most ``size`` items."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    return [items[i : i + size] for i in range(0, len(items), size)]


AUTO_CHUNK_MIN = 16
AUTO_CHUNK_MAX = 64
AUTO_CHUNKS_PER_WORKER = 8


def auto_chunk_size(n_items: int, workers: int) -> int:
    """Default chunk size: about 8 chunks per worker, within 16-64 patients.

    Each chunk costs one Prefect task and one Parquet part (tens of ms of flow-process CPU), so
    chunks must not be tiny on large cohorts; they must not be huge either, since a chunk is the
    unit of progress and of work lost when a worker dies.

    Args:
        n_items: patients to process.
        workers: workers that process chunks in parallel.

    Returns:
        ``clip(ceil(n / (8 * workers)), 16, 64)``.
    """
    wanted = -(-n_items // (AUTO_CHUNKS_PER_WORKER * max(1, workers)))
    return min(AUTO_CHUNK_MAX, max(AUTO_CHUNK_MIN, wanted))


def balanced_chunk_size(n_items: int, chunk_size: int, workers: int) -> int:
    """Largest size <= ``chunk_size`` that gives every worker the same number of chunks.

    With ``n`` items and ``w`` workers the chunk count is rounded up to a multiple of ``w`` and the
    items are spread evenly over the chunks, so that no worker is left alone with a last chunk
    while the others idle (the tail of a short run).

    Args:
        n_items: items to split.
        chunk_size: the largest allowed chunk.
        workers: workers that process chunks in parallel.

    Returns:
        The chunk size to pass to :func:`chunked` (>= 1).
    """
    if chunk_size < 1 or workers < 1:
        raise ValueError(f"chunk size and workers must be >= 1, got {chunk_size}, {workers}")
    if n_items <= 0:
        return chunk_size
    rounds = -(-n_items // (workers * chunk_size))  # chunks per worker
    return max(1, -(-n_items // (rounds * workers)))
