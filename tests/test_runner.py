"""Chunking: sizes that balance the workers (hand-computed cases)."""

from __future__ import annotations

import pytest

from echo_batch.runner import balanced_chunk_size, chunked


@pytest.mark.parametrize(
    ("n", "size", "workers", "expected"),
    [
        (50, 16, 2, 13),  # 4 chunks of 13, 13, 13, 11: two per worker instead of 16, 16, 16, 2
        (50, 8, 2, 7),  # 8 chunks (4 per worker) instead of 7
        (2000, 25, 2, 25),  # already a multiple: unchanged
        (3, 16, 2, 2),  # fewer items than workers x size: one chunk per worker
        (1, 16, 4, 1),
        (10, 1, 3, 1),
        (0, 16, 2, 16),
    ],
)
def test_balanced_chunk_size(n: int, size: int, workers: int, expected: int) -> None:
    got = balanced_chunk_size(n, size, workers)
    assert got == expected
    assert 1 <= got <= size
    if n:
        n_chunks = len(chunked(list(range(n)), got))
        rounds = -(-n // (workers * size))
        assert -(-n_chunks // workers) == rounds  # never more rounds than the requested size needs


def test_balanced_chunk_size_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        balanced_chunk_size(10, 0, 2)
    with pytest.raises(ValueError):
        balanced_chunk_size(10, 4, 0)
