"""How a cohort is cut into chunks: the unit of work, of progress and of loss when a worker dies."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar, overload

T = TypeVar("T")


class Chunks(Sequence[Sequence[T]]):
    """Consecutive chunks of at most ``size`` items of a sequence, each sliced when it is taken.

    Nothing is copied up front: with :class:`~echo_batch.io.patient_refs.PatientRefs` the
    chunks of a 100,000-patient run stay compressed until each is sent to a worker.
    """

    def __init__(self, items: Sequence[T], size: int) -> None:
        if size < 1:
            raise ValueError(f"chunk size must be >= 1, got {size}")
        self.items, self.size = items, size

    def __len__(self) -> int:
        return -(-len(self.items) // self.size)

    @overload
    def __getitem__(self, index: int) -> Sequence[T]: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Sequence[T]]: ...

    def __getitem__(self, index: int | slice) -> Sequence[T] | Sequence[Sequence[T]]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"chunk {index} of {len(self)}")
        return self.items[index * self.size : (index + 1) * self.size]


def chunked(items: Sequence[T], size: int) -> Chunks[T]:
    """Split a sequence into consecutive chunks of at most ``size`` items (see :class:`Chunks`)."""
    return Chunks(items, size)


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
