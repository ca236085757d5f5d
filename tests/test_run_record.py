"""run.json's summary from the columns it needs (issue 18: no record object per patient)."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from echo_batch.io.discovery import Manifest
from echo_batch.run import record
from echo_batch.run.options import ChunkOptions, RunOptions
from echo_batch.store.files import PATIENTS_FILE, write_results
from echo_batch.store.records import PatientRecord


def _patients() -> list[PatientRecord]:
    def row(pid, status, ef, category, ref=None, gt=None, qc=True):
        return PatientRecord(
            pid,
            "testing",
            status,
            error="long text " * 20,
            ef_pct=ef,
            ef_camus_pct=None if ef is None else round(ef),
            ef_category=category,
            ef_ref_pct=ref,
            ef_gt_pct=gt,
            qc_pass=qc,
        )

    return [
        row("a", "ok", 60.0, "preserved", ref=58.0, gt=61.0),
        row("b", "ok", 35.0, "reduced", ref=40.0, gt=33.0, qc=False),
        row("c", "partial", None, "", ref=50.0),
        row("d", "failed", None, None, qc=False),
        row("e", "ok", 45.5, "mildly_reduced", ref=47.0, gt=44.0),
    ]


def test_summary_by_hand(tmp_path):
    write_results(tmp_path, _patients(), [], model_id="gt")
    table = pq.read_table(tmp_path / PATIENTS_FILE, columns=list(record.SUMMARY_COLUMNS))
    summary = record.summarise(table)
    assert summary["patients"] == 5
    assert summary["status"] == {"ok": 3, "partial": 1, "failed": 1}
    assert list(summary["status"]) == ["ok", "partial", "failed"], "order of first occurrence"
    assert summary["qc_pass"] == 3
    assert summary["ef_category"] == {"preserved": 1, "reduced": 1, "mildly_reduced": 1}
    assert summary["ef_pct"]["p50"] == 45.5
    assert summary["ef_pct"]["p25"] == pytest.approx(40.25)  # 35 + (45.5 - 35) / 2
    vs_cfg = summary["agreement"]["ef_vs_cfg"]  # a, b, e: +2, -5, -1.5
    assert vs_cfg["n"] == 3
    assert vs_cfg["bias"] == pytest.approx(np.mean([2.0, -5.0, -1.5]))
    assert vs_cfg["mae"] == pytest.approx(np.mean([2.0, 5.0, 1.5]))
    assert summary["agreement"]["expert_camus_vs_cfg"] is None  # no expert CAMUS EF at all


def test_summary_of_no_patients(tmp_path):
    write_results(tmp_path, [], [], model_id="gt")
    summary = record.summarise(pq.read_table(tmp_path / PATIENTS_FILE))
    assert summary["patients"] == 0 and summary["status"] == {} and summary["qc_pass"] == 0
    assert summary["ef_pct"] is None and summary["ef_category"] == {}


def test_run_record_reads_only_the_summary_columns(tmp_path, monkeypatch):
    write_results(tmp_path, _patients(), [], model_id="gt")
    expected = record.summarise(pq.read_table(tmp_path / PATIENTS_FILE))  # every column
    asked = []
    real = pq.read_table

    def read_table(path, *args, columns=None, **kwargs):
        asked.append(columns)
        return real(path, *args, columns=columns, **kwargs)

    monkeypatch.setattr(record.pq, "read_table", read_table)
    options = RunOptions(tmp_path / "data", tmp_path, ChunkOptions())
    written = record.run_record(
        options, Manifest(tmp_path / "data", ()), "gt", executor="serial", seconds={}, started=0.0
    )
    assert asked == [list(record.SUMMARY_COLUMNS)]
    assert "error" not in asked[0] and "measure_config" not in asked[0]
    assert written["summary"] == expected
