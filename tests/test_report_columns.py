"""The report reads only the columns it uses (issue 18) and shows the same as with every column."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from echo_batch.report import build, stats
from echo_batch.report.build import write_report
from echo_batch.run.options import ChunkOptions, RunOptions
from echo_batch.run.serial import run_cohort
from echo_batch.synth import synth_cohort


@pytest.fixture(scope="module")
def loop_out(tmp_path_factory) -> Path:
    """OUT of a ``--segmentation gt --frames detected`` run on 5 synthetic loop patients."""
    root = tmp_path_factory.mktemp("report-columns")
    data = synth_cohort(root / "data", 5, seed=3, max_side=64, loops=True)
    out = root / "out"
    run_cohort(
        RunOptions(data, out, ChunkOptions(segmentation="gt", frames="detected"), report=False)
    )
    return out


def _report(out: Path, tmp_path: Path, name: str, worst: int) -> tuple[dict, dict[str, bytes]]:
    copy = tmp_path / name
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("report"))
    index = write_report(copy, worst=worst)
    summary = json.loads((index.parent / "summary.json").read_text())
    summary.pop("out")
    pngs = {str(p.relative_to(index.parent)): p.read_bytes() for p in index.parent.rglob("*.png")}
    return summary, pngs


@pytest.mark.slow
def test_report_from_its_columns_equals_the_report_of_every_column(loop_out, tmp_path, monkeypatch):
    pruned = _report(loop_out, tmp_path, "pruned", worst=2)
    every = stats.load_run
    monkeypatch.setattr(build, "load_run", lambda out, **_: every(out))
    full = _report(loop_out, tmp_path, "full", worst=2)
    assert pruned[0] == full[0]
    assert pruned[0]["loops"]["frames"] > 100 and len(pruned[0]["gallery"]) == 2
    assert pruned[1].keys() == full[1].keys() and len(pruned[1]) >= 6
    assert pruned[1] == full[1], "the same plots, byte for byte"


def test_report_reads_only_its_columns(loop_out, tmp_path, monkeypatch):
    asked: dict[str, list[str] | None] = {}
    real = pd.read_parquet

    def read_parquet(path, *args, columns=None, **kwargs):
        asked[Path(path).name] = columns
        return real(path, *args, columns=columns, **kwargs)

    monkeypatch.setattr(stats.pd, "read_parquet", read_parquet)
    _report(loop_out, tmp_path, "spied", worst=0)
    assert set(asked) == {"patients.parquet", "images.parquet", "frames.parquet"}
    assert set(asked["images.parquet"]) == set(stats.REPORTED_IMAGE_COLUMNS)
    assert set(asked["frames.parquet"]) == set(stats.REPORTED_FRAME_COLUMNS)
    patients = asked["patients.parquet"]
    assert patients and "error" not in patients and "measure_config" not in patients
    assert "ef_pct" in patients and "ed_frame_2ch_annotated" in patients
