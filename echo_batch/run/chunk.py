"""The chunk-processing function shared by the serial CLI run, the Prefect flow and the tests.

``process_chunk`` takes a list of discovered patients and returns one PatientRecord per patient and
one ImageRecord per (patient, view, instant) present: load -> segment (model or ground truth) ->
measure -> records. A bad file or a failing measurement affects only its own image or patient.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from echo_batch.clinical import ef_category
from echo_batch.domain import (
    IMAGE_KEYS,
    ImageKey,
    Label,
    PatientRef,
    SegmentationSource,
    Status,
    View,
)
from echo_batch.errors import EchoBatchError, InputError, OutputError
from echo_batch.io.cfg import parse_cfg
from echo_batch.io.image import EchoImage, read_image
from echo_batch.measure.camus_method import CamusFailure, CamusResult, camus_biplane
from echo_batch.measure.landmarks import (
    GeometryFailure,
    ViewGeometry,
    largest_lv_component,
    measure_lv,
)
from echo_batch.measure.patient import patient_volumes, single_plane_ml
from echo_batch.measure.volumes import area_length_ml
from echo_batch.qc.flags import is_blocking, patient_flags
from echo_batch.qc.metrics import contour_distances_mm, dice_by_label
from echo_batch.run.options import ChunkOptions
from echo_batch.store.records import ChunkResult, ImageRecord, PatientRecord

logger = logging.getLogger(__name__)

GT_MODEL_ID = "gt"
PATIENTS_PER_PASS = 16  # patients held in memory at once inside a chunk (CPU)


@dataclass
class _ImageWork:
    """Per-image state while a chunk is processed."""

    key: ImageKey
    image: EchoImage | None = None
    gt: EchoImage | None = None
    mask: np.ndarray | None = None
    confidence: float | None = None
    error: str | None = None


@dataclass
class _PatientWork:
    ref: PatientRef
    images: dict[ImageKey, _ImageWork] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def get_engine(options: ChunkOptions):
    """The process-wide engine for these settings: the model is loaded once per process.

    Only the engine settings form the cache key, so options that do not concern the model
    (segmentation source, mask folder, CAMUS grid) never cause a reload.
    """
    return _cached_engine(
        options.model,
        options.device,
        options.precision,
        options.batch_size,
        options.threads,
        options.compile,
    )


@lru_cache(maxsize=2)
def _cached_engine(
    model: Path | None,
    device: str,
    precision: str,
    batch_size: int | None,
    threads: int | None,
    compile: bool,
):
    from echo_batch.model.inference import SegmentationEngine

    return SegmentationEngine.from_path(
        model,
        device=device,
        precision=precision,
        batch_size=batch_size,
        threads=threads,
        compile=compile,
    )


def model_id_for(options: ChunkOptions) -> str:
    """``gt`` or the bundle id the options select."""
    if options.segmentation == SegmentationSource.GT:
        return GT_MODEL_ID
    from echo_batch.model.bundle import bundle_model_id

    return bundle_model_id(options.model)


def _load_patient(ref: PatientRef, need_gt: bool) -> _PatientWork:
    work = _PatientWork(ref=ref)
    for key in IMAGE_KEYS:
        files = ref.images.get(key)
        if files is None or files.image is None:
            continue
        item = _ImageWork(key=key)
        work.images[key] = item
        try:
            item.image = read_image(files.image, patient_dir=ref.folder)
            if files.gt is not None:
                item.gt = read_image(files.gt, patient_dir=ref.folder, labels=True)
                if item.gt.array.shape != item.image.array.shape:
                    raise InputError(
                        files.gt,
                        f"ground truth shape {item.gt.array.shape} differs from the image "
                        f"{item.image.array.shape}",
                    )
            elif need_gt:
                item.error = f"{key}: no ground truth file (--segmentation gt)"
        except InputError as exc:
            item.error = str(exc)
            item.image = item.gt = None
        except Exception as exc:  # a reader defect must not take the other images down
            logger.exception("%s: reading %s failed", ref.patient_id, key)
            item.error = (
                f"{ref.patient_id} {key}: cannot read {files.gt if item.image else files.image}: "
                f"{type(exc).__name__}: {exc}"
            )
            item.image = item.gt = None
    return work


def _segment(works: Sequence[_PatientWork], options: ChunkOptions, engine=None) -> None:
    """Fill ``mask`` (and ``confidence``) of every loadable image, batched across patients."""
    todo = [i for w in works for i in w.images.values() if i.error is None and i.image is not None]
    if options.segmentation == SegmentationSource.GT:
        for item in todo:
            item.mask = item.gt.array if item.gt is not None else None
        return
    if not todo:
        return
    engine = engine or get_engine(options)
    results = engine.segment([item.image.array for item in todo])
    for item, seg in zip(todo, results, strict=True):
        item.mask, item.confidence = seg.labels, seg.confidence


def _image_record(
    ref: PatientRef, item: _ImageWork, geometry: ViewGeometry | GeometryFailure | None, source: str
) -> ImageRecord:
    key = item.key
    base = {"patient_id": ref.patient_id, "view": key.view.value, "instant": key.instant.value}
    if item.image is None or item.mask is None:
        return ImageRecord(
            **base, status=Status.FAILED.value, error=item.error, segmentation=source
        )
    spacing = item.image.spacing
    fields: dict[str, object] = {
        "height": int(item.image.array.shape[0]),
        "width": int(item.image.array.shape[1]),
        "spacing_row_mm": float(spacing[0]),
        "spacing_col_mm": float(spacing[1]),
        "confidence": item.confidence,
    }
    if item.gt is not None and source == SegmentationSource.MODEL.value:
        fields.update(dice_by_label(item.mask, item.gt.array))
        distances = contour_distances_mm(item.mask == Label.LV, item.gt.array == Label.LV, spacing)
        if distances is not None:
            fields.update(hd_lv_mm=distances[0], hd95_lv_mm=distances[1], mad_lv_mm=distances[2])
    from echo_batch.qc.flags import image_flags, image_qc

    fields["qc_flags"] = image_flags(image_qc(item.mask, spacing, geometry), item.confidence)
    if isinstance(geometry, GeometryFailure):
        error = f"{ref.patient_id} {key}: LV geometry failed: {geometry.reason}"
        return ImageRecord(
            **base, status=Status.FAILED.value, error=error, segmentation=source, **fields
        )
    assert geometry is not None
    fields.update(
        lv_area_mm2=geometry.area_mm2,
        lv_length_mm=geometry.length_mm,
        volume_single_ml=single_plane_ml(geometry),
        volume_area_length_ml=area_length_ml(geometry.area_mm2, geometry.length_mm),
    )
    return ImageRecord(**base, status=Status.OK.value, segmentation=source, **fields)


def _camus_ef(
    masks: dict[ImageKey, np.ndarray],
    spacings: dict[ImageKey, tuple[float, float]],
    grid_mm: float | None,
) -> CamusResult | CamusFailure:
    """CAMUS-compatible biplane on the largest LV component of each mask, or why it failed."""
    cleaned = {k: clean_lv(m) for k, m in masks.items()}
    return camus_biplane(cleaned, spacings, native_spacing_mm=grid_mm)


def clean_lv(labels: np.ndarray) -> np.ndarray:
    """``(H, W)`` uint8 mask of the largest LV component with holes filled (1 inside, else 0)."""
    out = np.zeros(labels.shape, np.uint8)
    found = largest_lv_component(labels)
    if found is not None:
        mask, (r0, c0) = found
        out[r0 : r0 + mask.shape[0], c0 : c0 + mask.shape[1]] = mask
    return out


def save_masks(work: _PatientWork, folder: Path) -> None:
    """Write the predicted label maps of one patient (native grid, input geometry).

    Nothing is written through a symbolic link: when ``folder`` or the patient's folder in it is
    a link (or a write fails), the patient's remaining masks are skipped and the reason is added to
    its errors, so its record says so (status partial) and the chunk goes on.
    """
    from echo_batch.io.writers import real_folder, write_image

    pid = work.ref.patient_id
    try:
        patient_folder = real_folder(folder, pid)
        for key, item in work.images.items():
            if item.mask is None or item.image is None:
                continue
            path = patient_folder / f"{pid}_{key}_pred.nii.gz"
            write_image(path, item.mask, item.image.spacing, item.image.geometry.origin)
    except (OutputError, OSError) as exc:
        work.errors.append(f"{pid}: masks not saved: {exc}")


def _patient_record(
    work: _PatientWork, options: ChunkOptions, model_id: str
) -> tuple[PatientRecord, list[ImageRecord]]:
    ref = work.ref
    source = options.segmentation.value
    geometries: dict[ImageKey, ViewGeometry] = {}
    gt_geometries: dict[ImageKey, ViewGeometry] = {}
    masks: dict[ImageKey, np.ndarray] = {}
    gt_masks: dict[ImageKey, np.ndarray] = {}
    spacings: dict[ImageKey, tuple[float, float]] = {}
    image_records: list[ImageRecord] = []
    errors = list(work.errors)
    for key, item in work.images.items():
        geometry = None
        if item.mask is not None and item.image is not None:
            spacings[key] = item.image.spacing
            masks[key] = item.mask
            geometry = measure_lv(item.mask, item.image.spacing)
            if isinstance(geometry, ViewGeometry):
                geometries[key] = geometry
            if item.gt is not None:
                gt_masks[key] = item.gt.array
                gt_geo = (
                    geometry
                    if options.segmentation == SegmentationSource.GT
                    else measure_lv(item.gt.array, item.image.spacing)
                )
                if isinstance(gt_geo, ViewGeometry):
                    gt_geometries[key] = gt_geo
        record = _image_record(ref, item, geometry, source)
        if record.error:
            errors.append(record.error)
        image_records.append(record)
    missing = [str(k) for k in IMAGE_KEYS if k not in work.images]
    if missing:
        errors.append(f"{ref.patient_id}: missing images {', '.join(missing)}")
    volumes = patient_volumes(geometries)
    gt_volumes = patient_volumes(gt_geometries) if gt_geometries else None
    camus_or_failure = _camus_ef(masks, spacings, options.camus_grid_mm)
    camus = camus_or_failure if isinstance(camus_or_failure, CamusResult) else None
    if camus is None:
        errors.append(f"{ref.patient_id}: no CAMUS-compatible EF: {camus_or_failure.reason}")
    if options.segmentation == SegmentationSource.GT:
        camus_gt = camus
    elif len(gt_masks) == len(IMAGE_KEYS):
        found = _camus_ef(gt_masks, spacings, options.camus_grid_mm)
        camus_gt = found if isinstance(found, CamusResult) else None
    else:
        camus_gt = None  # no (complete) ground truth: nothing to compare with, not an error
    cfg, cfg_error = _read_cfg(ref)
    if cfg_error:
        errors.append(cfg_error)
    single = volumes.single
    has_single = any(v[2] is not None for v in single.values())
    if volumes.ef_pct is not None:
        status = Status.OK if not errors else Status.PARTIAL
    else:
        status = Status.PARTIAL if has_single else Status.FAILED
    if status != Status.OK:
        errors.extend(n for n in volumes.notes if n not in errors)
    flags = patient_flags(
        volumes, image_records, geometries, None if cfg is None else cfg.image_quality
    )
    record = PatientRecord(
        patient_id=ref.patient_id,
        split=ref.split.value,
        status=status.value,
        error="; ".join(errors) if errors else None,
        edv_ml=volumes.edv_ml,
        esv_ml=volumes.esv_ml,
        ef_pct=volumes.ef_pct,
        edv_2ch_ml=single[View.A2C][0],
        esv_2ch_ml=single[View.A2C][1],
        ef_2ch_pct=single[View.A2C][2],
        edv_4ch_ml=single[View.A4C][0],
        esv_4ch_ml=single[View.A4C][1],
        ef_4ch_pct=single[View.A4C][2],
        edv_camus_ml=None if camus is None else float(camus.edv_ml),
        esv_camus_ml=None if camus is None else float(camus.esv_ml),
        ef_camus_pct=None if camus is None else float(camus.ef_pct),
        ef_category=None if volumes.ef_pct is None else ef_category(volumes.ef_pct).value,
        ef_ref_pct=None if cfg is None else cfg.ef_pct,
        edv_ref_ml=None if cfg is None else cfg.edv_ml,
        esv_ref_ml=None if cfg is None else cfg.esv_ml,
        ef_gt_pct=None if gt_volumes is None else gt_volumes.ef_pct,
        ef_camus_gt_pct=None if camus_gt is None else float(camus_gt.ef_pct),
        image_quality=None if cfg is None else cfg.image_quality,
        qc_pass=status == Status.OK and not is_blocking(flags),
        qc_flags=flags,
        model_id=model_id,
    )
    return record, image_records


def _read_cfg(ref: PatientRef):
    for view in (View.A2C, View.A4C):
        path = ref.cfgs.get(view)
        if path is None:
            continue
        try:
            return parse_cfg(path), None
        except EchoBatchError as exc:
            return None, f"{ref.patient_id}: {exc}"
    return None, None


def failed_patient_record(ref: PatientRef, error: str, model_id: str) -> PatientRecord:
    """Row of a patient whose processing raised: status failed, the reason kept."""
    return PatientRecord(
        patient_id=ref.patient_id,
        split=ref.split.value,
        status=Status.FAILED.value,
        error=error,
        model_id=model_id,
    )


def process_chunk(
    refs: Sequence[PatientRef],
    options: ChunkOptions,
    model_id: str | None = None,
    engine=None,
) -> ChunkResult:
    """Process a chunk of patients end to end.

    Args:
        refs: discovered patients.
        options: segmentation source and engine settings.
        model_id: id written to every row (computed from the options when None).
        engine: any object with ``segment(images) -> list[Segmentation]`` to use instead of the
            process-wide engine of the options (benchmark baselines, tests).

    Returns:
        ChunkResult with exactly one PatientRecord per input patient, in input order.
    """
    result = ChunkResult()
    model_id = model_id or model_id_for(options)
    seconds = {"load": 0.0, "segment": 0.0, "measure": 0.0}
    if options.segmentation == SegmentationSource.MODEL:
        engine = engine or get_engine(options)
    step = _patients_per_pass(options, engine)
    for start in range(0, len(refs), step):  # memory bounded by the pass, not by the chunk
        _process_pass(refs[start : start + step], options, model_id, engine, result, seconds)
    result.seconds = seconds
    return result


def _patients_per_pass(options: ChunkOptions, engine=None) -> int:
    """Patients loaded and segmented together: at least 16, and enough for one full batch of the
    engine in use (the engine resolved ``auto`` device and batch size; a GPU batches 256 images).
    """
    if options.segmentation != SegmentationSource.MODEL or engine is None:
        return PATIENTS_PER_PASS
    batch = int(getattr(engine, "batch_size", 1))
    return max(PATIENTS_PER_PASS, -(-batch // len(IMAGE_KEYS)))


def _process_pass(
    refs: Sequence[PatientRef],
    options: ChunkOptions,
    model_id: str,
    engine,
    result: ChunkResult,
    seconds: dict[str, float],
) -> None:
    """Load, segment and measure a few patients; append their records to ``result``."""
    t0 = time.perf_counter()
    need_gt = options.segmentation == SegmentationSource.GT
    works = [_load_patient(ref, need_gt) for ref in refs]
    t1 = time.perf_counter()
    _segment(works, options, engine)
    t2 = time.perf_counter()
    for work in works:
        try:
            if (
                options.save_masks_to is not None
                and options.segmentation == SegmentationSource.MODEL
            ):
                save_masks(work, options.save_masks_to)
            patient, images = _patient_record(work, options, model_id)
        except Exception as exc:  # one patient never takes the chunk down
            logger.exception("%s: measurement failed", work.ref.patient_id)
            patient = failed_patient_record(
                work.ref,
                f"{work.ref.patient_id}: internal error {type(exc).__name__}: {exc}",
                model_id,
            )
            images = []
        for problem in work.ref.problems:
            logger.debug("%s: %s", work.ref.patient_id, problem)
        if patient.status != Status.OK.value:
            logger.warning("%s: %s: %s", patient.patient_id, patient.status, patient.error)
        result.patients.append(patient)
        result.images.extend(images)
    t3 = time.perf_counter()
    seconds["load"] += t1 - t0
    seconds["segment"] += t2 - t1
    seconds["measure"] += t3 - t2
