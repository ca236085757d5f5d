"""Records mirror the Parquet schema; the store writes readable, self-describing files."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from echo_batch.store.files import write_results, write_run_record
from echo_batch.store.records import (
    SCHEMA_VERSION,
    FrameRecord,
    ImageRecord,
    PatientRecord,
    arrow_schema,
)

REQUIRED_PATIENT = [
    "patient_id",
    "status",
    "error",
    "edv_ml",
    "esv_ml",
    "ef_pct",
    "edv_2ch_ml",
    "esv_2ch_ml",
    "ef_2ch_pct",
    "edv_4ch_ml",
    "esv_4ch_ml",
    "ef_4ch_pct",
    "ef_camus_pct",
    "ef_ref_pct",
    "ef_gt_pct",
    "qc_pass",
    "qc_flags",
    "model_id",
]
REQUIRED_IMAGE = [
    "patient_id",
    "view",
    "instant",
    "status",
    "error",
    "height",
    "width",
    "spacing_row_mm",
    "spacing_col_mm",
    "lv_area_mm2",
    "lv_length_mm",
    "volume_single_ml",
    "dice_lv",
    "dice_myo",
    "dice_la",
    "hd_lv_mm",
    "mad_lv_mm",
    "confidence",
]
REQUIRED_FRAME = [  # frames.parquet as README.md "Outputs" lists it
    "patient_id",
    "view",
    "frame",
    "time_ms",
    "lv_area_px",
    "lv_area_mm2",
    "lv_length_mm",
    "volume_single_ml",
    "volume_rel",
    "confidence",
    "beat",
    "is_ed",
    "is_es",
]


@pytest.mark.parametrize(
    ("record_type", "required"),
    [
        (PatientRecord, REQUIRED_PATIENT),
        (ImageRecord, REQUIRED_IMAGE),
        (FrameRecord, REQUIRED_FRAME),
    ],
    ids=["patients", "images", "frames"],
)
def test_schema_has_every_required_column_and_mirrors_the_record(record_type, required):
    schema = arrow_schema(record_type)
    names = [f.name for f in dataclasses.fields(record_type)]
    assert schema.names == names
    assert set(required) <= set(names)


def test_schema_types_and_units():
    schema = arrow_schema(PatientRecord)
    assert schema.field("ef_pct").type == pa.float64()
    assert schema.field("ef_pct").nullable
    assert not schema.field("patient_id").nullable
    assert schema.field("qc_flags").type == pa.list_(pa.string())
    assert schema.field("qc_pass").type == pa.bool_()
    assert schema.field("edv_ml").metadata[b"unit"] == b"mL"
    images = arrow_schema(ImageRecord)
    assert images.field("lv_area_mm2").metadata[b"unit"] == b"mm^2"
    assert images.field("lv_length_mm").metadata[b"unit"] == b"mm"
    assert images.field("height").type == pa.int64()


def test_write_results_round_trips_through_pandas(tmp_path):
    patients = [
        PatientRecord("patient0001", "testing", "ok", ef_pct=55.5, qc_pass=True, model_id="m@1"),
        PatientRecord("patient0002", "testing", "failed", error="bad file", qc_flags=["x", "y"]),
    ]
    images = [ImageRecord("patient0001", "2CH", "ED", "ok", height=224, volume_single_ml=101.0)]
    p_path, i_path, f_path = write_results(tmp_path, patients, images, model_id="m@1")
    df = pd.read_parquet(p_path)
    assert list(df.patient_id) == ["patient0001", "patient0002"]
    assert df.ef_pct.iloc[0] == 55.5
    assert pd.isna(df.ef_pct.iloc[1])
    assert list(df.qc_flags.iloc[1]) == ["x", "y"]
    assert df.error.iloc[1] == "bad file"
    meta = pq.read_schema(p_path).metadata
    assert meta[b"echo_batch.schema_version"] == SCHEMA_VERSION.encode()
    assert meta[b"echo_batch.model_id"] == b"m@1"
    assert json.loads(meta[b"echo_batch.units"])["_ml"] == "mL"
    assert pd.read_parquet(i_path).height.iloc[0] == 224
    assert pd.read_parquet(f_path).empty, "frames.parquet has zero rows when there is no loop"
    assert not list(tmp_path.glob(".*tmp*")), "temporary files must be renamed away"


def test_run_record_is_json(tmp_path):
    path = write_run_record(tmp_path, {"model_id": "gt", "counts": {"ok": 2}})
    assert json.loads(path.read_text())["counts"] == {"ok": 2}
