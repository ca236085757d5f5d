"""Chunking: sizes that balance the workers (hand-computed cases)."""

from __future__ import annotations

import pytest

from echo_batch.run.chunking import balanced_chunk_size, chunked


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


@pytest.mark.parametrize(
    ("n", "workers", "expected"),
    [
        (50, 2, 16),  # small cohorts: the minimum
        (500, 2, 32),  # ceil(500 / 16)
        (2000, 2, 64),  # large cohorts: the maximum (memory per chunk is bounded anyway)
        (50_000, 64, 64),
        (1000, 64, 16),
    ],
)
def test_auto_chunk_size(n: int, workers: int, expected: int) -> None:
    from echo_batch.run.chunking import auto_chunk_size

    assert auto_chunk_size(n, workers) == expected


def test_passes_inside_a_chunk_do_not_change_the_records(tmp_path, monkeypatch) -> None:
    """Oracle: a chunk processed in passes of 2 patients equals one pass of all of them."""
    from echo_batch.domain import SegmentationSource
    from echo_batch.io.discovery import discover
    from echo_batch.run import chunk as pipeline
    from echo_batch.synth import synth_cohort

    root = synth_cohort(tmp_path / "c", 5, seed=11, fmt="nifti", max_side=96)
    refs = discover(root).patients
    options = pipeline.ChunkOptions(segmentation=SegmentationSource.GT)
    whole = pipeline.process_chunk(refs, options)
    monkeypatch.setattr(pipeline, "PATIENTS_PER_PASS", 2)
    assert pipeline._patients_per_pass(options) == 2
    passes = pipeline.process_chunk(refs, options)
    assert passes.patients == whole.patients
    assert passes.images == whole.images
    assert len(whole.patients) == 5
