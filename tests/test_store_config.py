"""Resume provenance: every row knows the settings that produced it (issue 13, defect 1).

A model run into an OUT that holds a gt run must not take the gt rows for its own: they are not
"done" for it, ``check_config`` names the difference in one line, and a compaction with
``keep_other_configs=False`` (``--no-resume``) leaves only this run's settings.
"""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from echo_batch.errors import EchoBatchError
from echo_batch.store.files import IMAGES_FILE, PATIENTS_FILE, write_results
from echo_batch.store.parts import ConfigMismatchError, OutputStore, measure_config
from echo_batch.store.records import ChunkResult, ImageRecord, PatientRecord

GT = measure_config("gt", None)
MODEL = measure_config("camus224-unet@0123456789ab", None)
MODEL_GRID = measure_config("camus224-unet@0123456789ab", 0.5)


def _chunk(model_id: str, *pids: str, ef: float = 55.0) -> ChunkResult:
    result = ChunkResult()
    for pid in pids:
        result.patients.append(PatientRecord(pid, "testing", "ok", ef_pct=ef, model_id=model_id))
        result.images.append(ImageRecord(pid, "2CH", "ED", "ok", segmentation=model_id))
    return result


@pytest.fixture()
def gt_then_model(tmp_path):
    """Hand-built OUT: a gt part (p1, p2, p3), then a model part (p2) of a later run."""
    OutputStore(tmp_path, GT).write_part(_chunk("gt", "p1", "p2", "p3", ef=50.0), 0)
    OutputStore(tmp_path, MODEL).write_part(_chunk("model", "p2", ef=60.0), 0)
    return tmp_path


def test_measure_config_is_canonical_json():
    assert GT == '{"camus_grid_mm": null, "model_id": "gt"}'
    assert (
        measure_config("m", 1)
        == measure_config("m", 1.0)
        == measure_config(camus_grid_mm=1.0, model_id="m")
    )
    assert measure_config("m", None, precision="bf16") == (
        '{"camus_grid_mm": null, "model_id": "m", "precision": "bf16"}'
    )
    assert GT != MODEL != MODEL_GRID
    with pytest.raises(ValueError):
        measure_config("m", float("nan"))


def test_every_row_written_by_a_store_carries_its_config(gt_then_model):
    parts = sorted((gt_then_model / "parts").glob("*.patients.parquet"))
    configs = [pq.read_table(p)["measure_config"].to_pylist() for p in parts]
    assert configs == [[GT, GT, GT], [MODEL]]


def test_only_rows_of_the_same_config_are_done(gt_then_model):
    assert OutputStore(gt_then_model, GT).done_patient_ids() == {"p1", "p3"}
    assert OutputStore(gt_then_model, MODEL).done_patient_ids() == {"p2"}
    assert OutputStore(gt_then_model, MODEL_GRID).done_patient_ids() == set()


def test_a_model_run_after_a_compacted_gt_run_recomputes_every_patient(tmp_path):
    """The defect: every patient was skipped as done and the output kept model_id gt."""
    gt = OutputStore(tmp_path, GT)
    gt.write_part(_chunk("gt", "p1", "p2"), 0)
    gt.compact(["p1", "p2"], "gt")
    model = OutputStore(tmp_path, MODEL)
    assert model.done_patient_ids() == set()
    model.write_part(_chunk("model", "p1", "p2"), 0)
    model.compact(["p1", "p2"], "model")
    patients = pd.read_parquet(tmp_path / PATIENTS_FILE)
    assert patients.model_id.tolist() == ["model", "model"]
    assert set(patients.measure_config) == {MODEL}


def test_check_config_names_the_difference_in_one_line(gt_then_model):
    with pytest.raises(ConfigMismatchError) as info:
        OutputStore(gt_then_model, MODEL).check_config()
    message = str(info.value)
    assert isinstance(info.value, EchoBatchError)
    assert "\n" not in message
    assert message == (
        f"{gt_then_model}: 2 patient row(s) were measured with other settings "
        '(model_id "gt" in OUT, "camus224-unet@0123456789ab" now); '
        "use --no-resume to replace them, or another --out"
    )
    with pytest.raises(ConfigMismatchError, match=r"^.*: 1 patient row\(s\) .*model_id \"camus"):
        OutputStore(gt_then_model, GT).check_config()  # only p2's latest row differs


def test_check_config_names_every_differing_key(tmp_path):
    OutputStore(tmp_path, MODEL).write_part(_chunk("model", "p1"), 0)
    with pytest.raises(ConfigMismatchError) as info:
        OutputStore(tmp_path, measure_config("other", 0.5)).check_config()
    assert "camus_grid_mm null in OUT, 0.5 now; model_id" in str(info.value)


def test_check_config_passes_when_every_latest_row_matches(gt_then_model):
    OutputStore(gt_then_model, GT).write_part(_chunk("gt", "p2"), 1)  # p2 redone with gt
    OutputStore(gt_then_model, GT).check_config()
    OutputStore(gt_then_model / "empty", GT).check_config()
    OutputStore(gt_then_model).check_config()  # a store without a config checks nothing


def test_rows_without_a_config_are_unknown_hence_different(tmp_path):
    """Files of schema 1.1 have no measure_config column; null in 1.2 means the same."""
    write_results(tmp_path, _chunk("gt", "p1", "p2").patients, [], model_id="gt")
    table = pq.read_table(tmp_path / PATIENTS_FILE).drop_columns(["measure_config"])
    pq.write_table(table, tmp_path / PATIENTS_FILE)
    store = OutputStore(tmp_path, GT)
    assert store.done_patient_ids() == set()
    with pytest.raises(ConfigMismatchError, match=r"2 patient row\(s\) .*2 without recorded"):
        store.check_config()


def test_check_config_reads_two_columns_only(gt_then_model, monkeypatch):
    read_columns: list[list[str]] = []
    real_read = pq.ParquetFile.read

    def read(self, columns=None, **kwargs):
        read_columns.append(list(columns) if columns is not None else ["<all>"])
        return real_read(self, columns=columns, **kwargs)

    def no_whole_tables(*args, **kwargs):
        raise AssertionError("check_config read a whole table")

    monkeypatch.setattr(pq.ParquetFile, "read", read)
    monkeypatch.setattr(pq, "read_table", no_whole_tables)
    with pytest.raises(ConfigMismatchError):
        OutputStore(gt_then_model, MODEL).check_config()
    assert read_columns == [["patient_id", "measure_config"]] * 2


def test_compaction_keeps_other_configs_by_default(gt_then_model, caplog):
    with caplog.at_level("WARNING"):
        OutputStore(gt_then_model, MODEL).compact(["p1", "p2", "p3"], "model")
    patients = pd.read_parquet(gt_then_model / PATIENTS_FILE).set_index("patient_id")
    assert patients.measure_config.to_dict() == {"p1": GT, "p2": MODEL, "p3": GT}
    assert "other model ids" in caplog.text


def test_no_resume_compaction_drops_rows_of_other_configs(gt_then_model, caplog):
    store = OutputStore(gt_then_model, MODEL)
    store.write_part(_chunk("model", "p1", "p3", ef=61.0), 0)  # --no-resume redid p1 and p3
    OutputStore(gt_then_model, GT).write_part(_chunk("gt", "gone"), 9)  # no longer discovered
    with caplog.at_level("WARNING"):
        store.compact(["p1", "p2", "p3"], "model", keep_other_configs=False)
    patients = pd.read_parquet(gt_then_model / PATIENTS_FILE)
    images = pd.read_parquet(gt_then_model / IMAGES_FILE)
    assert patients.patient_id.tolist() == ["p1", "p2", "p3"]
    assert set(patients.measure_config) == {MODEL}
    assert set(patients.model_id) == {"model"} and set(images.segmentation) == {"model"}
    assert "dropped 1 patient(s) measured with other settings" in caplog.text
    assert "gone" in caplog.text


def test_no_resume_compaction_refuses_a_discovered_patient_left_without_a_row(gt_then_model):
    with pytest.raises(EchoBatchError, match="no record for 2 discovered patient"):
        OutputStore(gt_then_model, MODEL).compact(
            ["p1", "p2", "p3"], "model", keep_other_configs=False
        )
    assert len(list((gt_then_model / "parts").iterdir())) == 6, "nothing consumed (2 x 3 parts)"


def test_the_run_record_of_a_config_is_plain_json():
    assert json.loads(MODEL_GRID) == {
        "camus_grid_mm": 0.5,
        "model_id": "camus224-unet@0123456789ab",
    }
