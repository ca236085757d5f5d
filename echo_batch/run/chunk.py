"""The chunk-processing function shared by the serial CLI run, the Prefect flow and the tests.

``process_chunk`` takes a list of discovered patients and returns one PatientRecord per patient and
one ImageRecord per (patient, view, instant) present: load -> segment (model or ground truth) ->
measure -> records. A bad file or a failing measurement affects only its own image or patient.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from echo_batch.clinical import ef_category
from echo_batch.domain import (
    IMAGE_KEYS,
    CfgInfo,
    FramesMode,
    FramesSource,
    ImageKey,
    Instant,
    Label,
    PatientRef,
    SegmentationSource,
    SpacingSource,
    Status,
    View,
)
from echo_batch.errors import EchoBatchError, InputError, OutputError
from echo_batch.io.cfg import parse_cfg
from echo_batch.io.image import EchoImage, read_with_truth
from echo_batch.measure.atrium import AtriumGeometry, measure_la
from echo_batch.measure.camus_method import CamusFailure, CamusResult, camus_biplane
from echo_batch.measure.deformation import border_length_mm
from echo_batch.measure.landmarks import (
    GeometryFailure,
    ViewGeometry,
    largest_lv_component,
    measure_lv,
)
from echo_batch.measure.patient import patient_volumes, single_plane_ml
from echo_batch.measure.study import SCALED_COLUMNS, StudyMeasures, study_measures
from echo_batch.measure.volumes import area_length_ml
from echo_batch.qc.atrium import la_edge_mm
from echo_batch.qc.flags import (
    QCFlag,
    atrium_image_flags,
    atrium_patient_flags,
    is_blocking,
    patient_flags,
)
from echo_batch.qc.metrics import contour_distances_mm, dice_by_label
from echo_batch.run.loops import (
    SIZE_FLAGS,
    BeatSummary,
    LoopMeasure,
    LoopWork,
    frame_records,
    measure_loop,
    read_loop,
    summarise_beats,
)
from echo_batch.run.members import member_spread
from echo_batch.run.options import UNCERTAINTY_METHOD, ChunkOptions, SimulatedDevice
from echo_batch.store.records import ChunkResult, ImageRecord, PatientRecord

logger = logging.getLogger(__name__)

GT_MODEL_ID = "gt"
PATIENTS_PER_PASS = 16  # patients held in memory at once inside a chunk (CPU)
FRAMES_PER_PASS = 512  # loop frames held in memory at once inside a chunk (a pass ends past it)
SIMULATED_BATCH_SIZE = 16  # images per pass of a simulated device without a batch size


@dataclass
class _ImageWork:
    """Per-image state while a chunk is processed."""

    key: ImageKey
    image: EchoImage | None = None
    gt: EchoImage | None = None
    mask: np.ndarray | None = None
    confidence: float | None = None
    error: str | None = None
    frame: int | None = None  # the loop frame this image was taken from (None for a still)
    members: tuple[np.ndarray, ...] = ()  # each ensemble member's labels (--uncertainty)
    gt_lv_only: bool = False  # the expert mask traces the LV cavity only (EchoNet's tracings)


@dataclass
class _PatientWork:
    """Per-patient state while a chunk is processed.

    ``images`` are the stills, or the ED and ES frames chosen from the loops; ``annotated`` holds
    the stills measured beside detected frames (``--frames detected`` on annotated input).
    """

    ref: PatientRef
    images: dict[ImageKey, _ImageWork] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    loops: dict[View, LoopWork] = field(default_factory=dict)
    cfgs: dict[View, CfgInfo] = field(default_factory=dict)
    frames_source: FramesSource = FramesSource.ANNOTATED
    annotated: dict[ImageKey, _ImageWork] = field(default_factory=dict)
    annotated_ef: float | None = None  # biplane EF on the cfg's loop frames (detected mode)

    @property
    def n_frames(self) -> int:
        """Loop frames held by this patient."""
        return sum(loop.n_frames for loop in self.loops.values())


def get_engine(options: ChunkOptions):
    """The process-wide engine for these settings: the model is loaded once per process.

    Only the engine settings form the cache key, so options that do not concern the model
    (segmentation source, mask folder, CAMUS grid) never cause a reload. With
    ``options.simulated_device`` the engine is a simulated device (tests, benchmarks).
    """
    engine = _cached_engine(
        options.bundle,
        options.device,
        options.precision,
        options.batch_size,
        options.threads,
        options.compile,
        options.simulated_device,
    )
    if not options.uncertainty or hasattr(engine, "member_probabilities"):
        return engine  # no members asked for, or an ensemble bundle's engine (members already)
    return _ensemble_of(engine)


def uncertainty_method(options: ChunkOptions) -> str | None:
    """What the members of a run are (recorded in every row's settings), or None without members.

    An ensemble bundle always runs its members (``ensemble-<networks>x<variants>``); an ordinary
    bundle runs the test-time variants with ``--uncertainty``.
    """
    if options.segmentation != SegmentationSource.MODEL or options.simulated_device is not None:
        return UNCERTAINTY_METHOD if options.uncertainty else None
    from echo_batch.model.ensemble_bundle import ensemble_method

    method = ensemble_method(options.bundle)
    if method is not None:
        return method
    return UNCERTAINTY_METHOD if options.uncertainty else None


@lru_cache(maxsize=2)
def _ensemble_of(engine):
    """The test-time-variant ensemble around the process-wide engine (``--uncertainty``)."""
    from echo_batch.model.ensemble import VariantEngine

    return VariantEngine(engine)


@lru_cache(maxsize=2)
def _cached_engine(
    model: Path | None,
    device: str,
    precision: str,
    batch_size: int | None,
    threads: int | None,
    compile: bool,
    simulated: SimulatedDevice | None = None,
):
    if simulated is not None:
        from echo_batch.model.simulated import SimulatedEngine

        return SimulatedEngine(simulated, grid_size(model), batch_size or SIMULATED_BATCH_SIZE)
    from echo_batch.model.ensemble_bundle import is_ensemble, read_ensemble
    from echo_batch.model.inference import SegmentationEngine

    settings = {
        "device": device,
        "precision": precision,
        "batch_size": batch_size,
        "threads": threads,
        "compile": compile,
    }
    if not is_ensemble(model):
        return SegmentationEngine.from_path(model, **settings)
    from echo_batch.model.ensemble import EnsembleEngine
    from echo_batch.model.tta import Variant

    ensemble = read_ensemble(model)  # type: ignore[arg-type]
    return EnsembleEngine(
        [SegmentationEngine.from_path(n, **settings) for n in ensemble.networks],
        [Variant(**v) for v in ensemble.variants],
        model_id=ensemble.model_id,
    )


@lru_cache(maxsize=4)
def grid_size(model: Path | None) -> tuple[int, int]:
    """``(rows, cols)`` of the network input of the bundle at ``model`` (None: the default
    bundle), read from its metadata alone (no weights, no torch), once per process."""
    import json

    from echo_batch.model.bundle import DEFAULT_BUNDLE, METADATA_FILE

    path = Path(model or DEFAULT_BUNDLE)
    metadata = json.loads((path / METADATA_FILE).read_text("utf-8"))
    if metadata.get("format") == "ensemble":  # its networks share one grid
        path = path / metadata["networks"][0]["path"]
        metadata = json.loads((path / METADATA_FILE).read_text("utf-8"))
    rows, cols = metadata["input"]["size"]
    return int(rows), int(cols)


def model_id_for(options: ChunkOptions) -> str:
    """``gt`` or the bundle id the options select."""
    if options.segmentation == SegmentationSource.GT:
        return GT_MODEL_ID
    from echo_batch.model.ensemble_bundle import model_id_of

    return model_id_of(options.bundle)


def _load_stills(ref: PatientRef, need_gt: bool) -> dict[ImageKey, _ImageWork]:
    """Read the patient's still images (and expert masks); a failure is that image's error."""
    stills: dict[ImageKey, _ImageWork] = {}
    for key in IMAGE_KEYS:
        files = ref.images.get(key)
        if files is None or files.image is None:
            continue
        item = _ImageWork(key=key)
        stills[key] = item
        try:
            item.image, item.gt = read_with_truth(files.image, files.gt, patient_dir=ref.folder)
            if files.gt is None and need_gt:
                item.error = f"{key}: no ground truth file (--segmentation gt)"
        except InputError as exc:
            item.error = str(exc)
            item.image = item.gt = None
        except Exception as exc:  # a reader defect must not take the other images down
            logger.exception("%s: reading %s failed", ref.patient_id, key)
            item.error = (
                f"{ref.patient_id} {key}: cannot read {files.image}"
                f"{' or its ground truth' if files.gt else ''}: {type(exc).__name__}: {exc}"
            )
            item.image = item.gt = None
    return stills


def _load_patient(ref: PatientRef, need_gt: bool, mode: FramesMode) -> _PatientWork:
    """Read what the frames mode needs: stills, loops, or both.

    ``auto`` and ``annotated`` measure the stills where the patient has them, else the loop frames
    that the cfg annotates (1-based ED/ES), and ``auto`` detects ED and ES from the loops where
    nothing is annotated; ``detected`` always detects from the loops and measures the annotated
    frames beside (stills, or the cfg's loop frames) so that both can be compared.
    """
    work = _PatientWork(ref=ref)
    work.cfgs, cfg_errors = _read_cfgs(ref)
    work.errors.extend(cfg_errors)
    use_loops = bool(ref.sequences) and (
        mode == FramesMode.DETECTED
        or (not ref.images and mode == FramesMode.AUTO)
        or (not ref.images and _annotated_frames(work))
    )
    if ref.images and (not use_loops or mode == FramesMode.DETECTED):
        stills = _load_stills(ref, need_gt)
        if use_loops:
            work.annotated = stills  # measured beside the detected frames
        else:
            work.images = stills
    if use_loops:
        for view in ref.sequences:
            cfg, meta = work.cfgs.get(view), ref.clip_meta.get(view)
            rate = None if cfg is None else cfg.frame_rate_hz
            frame_time = 1000.0 / rate if rate else None
            if meta is not None and meta.frame_time_ms is not None:
                frame_time = meta.frame_time_ms
            work.loops[view] = read_loop(ref, view, need_gt, frame_time)
        annotated_only = mode != FramesMode.DETECTED and bool(_annotated_frames(work))
        work.frames_source = FramesSource.ANNOTATED if annotated_only else FramesSource.DETECTED
    elif not ref.images:
        work.errors.append(
            f"{ref.patient_id}: no annotated ED/ES frames (--frames annotated): no stills, "
            "and no ED/ES frame indices in the cfg"
            if ref.sequences
            else f"{ref.patient_id}: no images and no loops"
            + (f" ({'; '.join(ref.problems)})" if ref.problems else "")
        )
    return work


def _annotated_frames(work: _PatientWork) -> dict[View, tuple[int, int]]:
    """0-based (ED, ES) loop frames that the input annotates (a CAMUS cfg, 1-based in the file;
    a manifest or EchoNet's tracings, 0-based), per view with a loop."""
    found = {}
    for view in work.ref.sequences:
        cfg, meta = work.cfgs.get(view), work.ref.clip_meta.get(view)
        if meta is not None and meta.ed_frame is not None and meta.es_frame is not None:
            found[view] = (meta.ed_frame, meta.es_frame)
        elif cfg is not None and cfg.ed_frame and cfg.es_frame:
            found[view] = (cfg.ed_frame - 1, cfg.es_frame - 1)
    return found


def segment_targets(
    works: Sequence[_PatientWork],
) -> tuple[list[_ImageWork], list[LoopWork]]:
    """The loaded stills (and annotated stills) and loops of a pass, in the order their images
    are segmented: the stills first, then every frame of each loop."""
    stills = [
        item
        for w in works
        for item in (*w.images.values(), *w.annotated.values())
        if item.error is None and item.image is not None
    ]
    loops = [loop for w in works for loop in w.loops.values() if loop.frames is not None]
    return stills, loops


def _segment(works: Sequence[_PatientWork], options: ChunkOptions, engine=None) -> None:
    """Fill the masks (and confidences) of every loadable still and loop frame, batched across
    patients: the frames of many loops share the engine's batches with the stills."""
    stills, loops = segment_targets(works)
    if options.segmentation == SegmentationSource.GT:
        for item in stills:
            item.mask = item.gt.array if item.gt is not None else None
        for loop in loops:
            loop.masks = None if loop.gt is None else list(loop.gt.array)
            loop.confidences = [None] * loop.n_frames
        return
    if not stills and not loops:
        return
    engine = engine or get_engine(options)
    inputs = [item.image.array for item in stills]
    for loop in loops:
        inputs.extend(loop.frames.array)
    results = engine.segment(inputs)
    set_masks(stills, loops, [s.labels for s in results], [s.confidence for s in results])
    members = [getattr(s, "members", ()) for s in results]
    if any(members):  # an ensemble: each member's labels too
        for item, maps in zip(stills, members, strict=False):
            item.members = maps
        start = len(stills)
        for loop in loops:
            loop.members = members[start : start + loop.n_frames]
            start += loop.n_frames


def set_masks(
    stills: Sequence[_ImageWork],
    loops: Sequence[LoopWork],
    labels: Sequence[np.ndarray],
    confidences: Sequence[float],
) -> None:
    """Give each still and loop frame (in :func:`segment_targets` order) its native labels."""
    for item, mask, confidence in zip(stills, labels, confidences, strict=False):
        item.mask, item.confidence = mask, confidence
    start = len(stills)
    for loop in loops:
        loop.masks = list(labels[start : start + loop.n_frames])
        loop.confidences = list(confidences[start : start + loop.n_frames])
        start += loop.n_frames


def _image_record(
    ref: PatientRef, item: _ImageWork, geometry: ViewGeometry | GeometryFailure | None, source: str
) -> ImageRecord:
    key = item.key
    base = {"patient_id": ref.patient_id, "view": key.view.value, "instant": key.instant.value}
    if item.frame is not None:
        base["frame"] = item.frame
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
        dice = dice_by_label(item.mask, item.gt.array)
        if item.gt_lv_only:  # a tracing of the cavity says nothing of myocardium and atrium
            dice = {"dice_lv": dice["dice_lv"]}
        fields.update(dice)
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
    atria: dict[View, AtriumGeometry | GeometryFailure] = {}  # at LV end-systole
    gt_atria: dict[View, AtriumGeometry | GeometryFailure] = {}
    image_records: list[ImageRecord] = []
    errors = list(work.errors)
    for key, item in work.images.items():
        geometry = atrium = None
        if item.mask is not None and item.image is not None:
            spacings[key] = item.image.spacing
            masks[key] = item.mask
            geometry = measure_lv(item.mask, item.image.spacing)
            atrium = measure_la(item.mask, item.image.spacing, geometry)
            if isinstance(geometry, ViewGeometry):
                geometries[key] = geometry
            if key.instant == Instant.ES:
                atria[key.view] = atrium
            if item.gt is not None:
                gt_masks[key] = item.gt.array
                gt_geo, gt_atrium = (
                    (geometry, atrium)
                    if options.segmentation == SegmentationSource.GT
                    else _lv_and_atrium(item.gt.array, item.image.spacing)
                )
                if isinstance(gt_geo, ViewGeometry):
                    gt_geometries[key] = gt_geo
                if key.instant == Instant.ES:
                    gt_atria[key.view] = gt_atrium
        record = _image_record(ref, item, geometry, source)
        record = _with_study_fields(record, item, geometry, atrium)
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
    cfg = _patient_cfg(work.cfgs)
    single = volumes.single
    has_single = any(v[2] is not None for v in single.values())
    if volumes.ef_pct is not None:
        status = Status.OK if not errors else Status.PARTIAL
    else:
        status = Status.PARTIAL if has_single else Status.FAILED
    if status != Status.OK:
        errors.extend(n for n in volumes.notes if n not in errors)
    study = study_measures(geometries, spacings, atria)
    gt_study = (
        study_measures(gt_geometries, spacings, gt_atria) if gt_geometries else StudyMeasures()
    )
    if status != Status.FAILED:  # why each measurement beside EF is null (status unchanged)
        errors.extend(n for n in study.notes if n not in errors)
    flags = patient_flags(
        volumes, image_records, geometries, None if cfg is None else cfg.image_quality
    )
    flags = sorted({*flags, *atrium_patient_flags(study.la_length_2ch_mm, study.la_length_4ch_mm)})
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
        ef_ref_pct=ref.ef_ref_pct if cfg is None else cfg.ef_pct,
        edv_ref_ml=None if cfg is None else cfg.edv_ml,
        esv_ref_ml=None if cfg is None else cfg.esv_ml,
        ef_gt_pct=None if gt_volumes is None else gt_volumes.ef_pct,
        ef_camus_gt_pct=None if camus_gt is None else float(camus_gt.ef_pct),
        image_quality=None if cfg is None else cfg.image_quality,
        qc_pass=status == Status.OK and not is_blocking(flags),
        qc_flags=flags,
        model_id=model_id,
        **study.columns(),
        la_volume_gt_ml=gt_study.la_volume_ml,
        la_volume_al_gt_ml=gt_study.la_volume_al_ml,
        gls_contour_gt_pct=gt_study.gls_contour_pct,
        fac_2ch_gt_pct=gt_study.fac_2ch_pct,
        fac_4ch_gt_pct=gt_study.fac_4ch_pct,
    )
    return record, image_records


def _lv_and_atrium(
    labels: np.ndarray, spacing: tuple[float, float]
) -> tuple[ViewGeometry | GeometryFailure, AtriumGeometry | GeometryFailure]:
    """The LV and the atrium of one label map."""
    geometry = measure_lv(labels, spacing)
    return geometry, measure_la(labels, spacing, geometry)


def _with_study_fields(
    record: ImageRecord,
    item: _ImageWork,
    geometry: ViewGeometry | GeometryFailure | None,
    atrium: AtriumGeometry | GeometryFailure | None,
) -> ImageRecord:
    """The image row with its LV border length, its atrium's area and length and, at LV
    end-systole (where the LA volume is measured), the ``la_cut`` flag."""
    if not isinstance(geometry, ViewGeometry) or item.image is None or item.mask is None:
        return record
    spacing = item.image.spacing
    fields: dict[str, object] = {"lv_border_length_mm": border_length_mm(geometry, spacing)}
    if isinstance(atrium, AtriumGeometry):
        fields.update(la_area_mm2=atrium.area_mm2, la_length_mm=atrium.length_mm)
        if item.key.instant == Instant.ES:
            cut = atrium_image_flags(la_edge_mm(item.mask, item.image.array, spacing))
            fields["qc_flags"] = sorted({*(record.qc_flags or ()), *cut})
    return dataclasses.replace(record, **fields)


def _read_cfgs(ref: PatientRef) -> tuple[dict[View, CfgInfo], list[str]]:
    """The patient's ``Info_{VIEW}.cfg`` files that parse, and an error per file that does not."""
    cfgs: dict[View, CfgInfo] = {}
    errors: list[str] = []
    for view, path in ref.cfgs.items():
        try:
            cfgs[view] = parse_cfg(path)
        except EchoBatchError as exc:
            errors.append(f"{ref.patient_id}: {exc}")
    return cfgs, errors


def _patient_cfg(cfgs: dict[View, CfgInfo]) -> CfgInfo | None:
    """The cfg whose reference values a patient row reports (2CH first, as CAMUS does)."""
    return cfgs.get(View.A2C) or cfgs.get(View.A4C)


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
    """Process a chunk of patients end to end: load, segment and measure, pass by pass.

    The three stages are the ones a split run sends to different workers
    (:mod:`echo_batch.run.stages`); here they run one after the other in this process, and the
    engine brings the images to its grid itself.

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
    patients = iter(refs)
    while works := load_pass(patients, options, step, seconds):
        t1 = time.perf_counter()
        _segment(works, options, engine)
        t2 = time.perf_counter()
        measure_pass(works, options, model_id, result)
        seconds["segment"] += t2 - t1
        seconds["measure"] += time.perf_counter() - t2
    result.seconds = seconds
    return result


def load_pass(
    patients: Iterator[PatientRef],
    options: ChunkOptions,
    step: int,
    seconds: dict[str, float],
) -> list[_PatientWork]:
    """Read the next pass of patients from ``patients`` (empty when none is left).

    Memory is bounded by the pass, not by the chunk: a pass ends after ``step`` patients or once
    its loops hold :data:`FRAMES_PER_PASS` frames, whatever the loops' lengths.

    Args:
        patients: the chunk's patients; those read are consumed.
        options: segmentation source and frames mode.
        step: patients per pass.
        seconds: ``seconds["load"]`` grows by the reading time.
    """
    need_gt = options.segmentation == SegmentationSource.GT
    works: list[_PatientWork] = []
    frames = 0
    for ref in patients:
        t0 = time.perf_counter()
        works.append(_load_patient(ref, need_gt, options.frames))
        seconds["load"] += time.perf_counter() - t0
        frames += works[-1].n_frames
        if len(works) >= step or frames >= FRAMES_PER_PASS:
            break
    return works


def _patients_per_pass(options: ChunkOptions, engine=None) -> int:
    """Patients loaded and segmented together: at least 16, and enough for one full batch of the
    engine in use (the engine resolved ``auto`` device and batch size; a GPU batches 256 images).
    """
    if options.segmentation != SegmentationSource.MODEL or engine is None:
        return PATIENTS_PER_PASS
    return patients_per_pass(int(getattr(engine, "batch_size", 1)))


def patients_per_pass(batch_size: int) -> int:
    """At least :data:`PATIENTS_PER_PASS`, and enough patients (of four stills each) for one
    full batch of ``batch_size`` images."""
    return max(PATIENTS_PER_PASS, -(-batch_size // len(IMAGE_KEYS)))


def measure_pass(
    works: list[_PatientWork],
    options: ChunkOptions,
    model_id: str,
    result: ChunkResult,
) -> None:
    """Measure a few segmented patients; append their records to ``result``."""
    for work in works:
        frames: list = []
        try:
            summary = _use_loops(work, frames) if work.loops else None
            if (
                options.save_masks_to is not None
                and options.segmentation == SegmentationSource.MODEL
            ):
                save_masks(work, options.save_masks_to)
            patient, images = _patient_record(work, options, model_id)
            patient = _with_frames_columns(patient, work, summary)
            patient, images = _with_member_spread(patient, images, work, options)
            patient, images = _apply_spacing(patient, images, work)
        except Exception as exc:  # one patient never takes the chunk down
            logger.exception("%s: measurement failed", work.ref.patient_id)
            patient = failed_patient_record(
                work.ref,
                f"{work.ref.patient_id}: internal error {type(exc).__name__}: {exc}",
                model_id,
            )
            images, frames = [], []
        for problem in work.ref.problems:
            logger.debug("%s: %s", work.ref.patient_id, problem)
        if patient.status != Status.OK.value:
            logger.warning("%s: %s: %s", patient.patient_id, patient.status, patient.error)
        result.patients.append(patient)
        result.images.extend(images)
        result.frames.extend(frames)


def _use_loops(work: _PatientWork, frames: list) -> BeatSummary | None:
    """Measure every frame of the patient's loops and take their ED/ES frames as its images.

    Appends the loops' frame rows to ``frames``. Returns the beats' summary when ED and ES were
    detected (None when the cfg's annotated frames were used).
    """
    pid = work.ref.patient_id
    measures: dict[View, LoopMeasure] = {}
    for view, loop in work.loops.items():
        if loop.error is not None:
            work.errors.append(loop.error)
        elif loop.masks is None:
            work.errors.append(f"{pid} {view.value} loop: no masks to measure")
        else:
            measures[view] = measure_loop(loop)
            frames.extend(frame_records(pid, loop, measures[view]))
    annotated = _annotated_frames(work)
    summary = None
    if work.frames_source == FramesSource.ANNOTATED:
        chosen = {v: annotated[v] for v in measures if v in annotated}
    else:
        summary = summarise_beats(measures)
        chosen = {v: (b.ed, b.es) for v, b in summary.chosen.items()}
        for view, measure in measures.items():
            if not measure.cycle.beats:
                work.errors.append(
                    f"{pid} {view.value} loop: no beat found: {measure.cycle.reason}"
                )
    for view, (ed, es) in chosen.items():
        loop = work.loops[view]
        if not (0 <= ed < loop.n_frames and 0 <= es < loop.n_frames):
            work.errors.append(
                f"{pid} {view.value} loop: annotated frames ED {ed + 1}, ES {es + 1} (1-based) "
                f"outside its {loop.n_frames} frames"
            )
            continue
        for instant, index in ((Instant.ED, ed), (Instant.ES, es)):
            key = ImageKey(view, instant)
            work.images[key] = _ImageWork(
                key=key,
                image=loop.still(index),
                gt=loop.truth(index),
                gt_lv_only=loop.traced is not None,
                mask=loop.masks[index],
                confidence=loop.confidences[index],
                frame=index,
                members=loop.members[index] if loop.members else (),
            )
    if work.frames_source == FramesSource.DETECTED and not work.annotated and annotated:
        geometries = {  # the cfg's annotated loop frames, measured for the comparison
            ImageKey(view, instant): measures[view].geometries[index]
            for view, pair in annotated.items()
            if view in measures and all(0 <= i < work.loops[view].n_frames for i in pair)
            for instant, index in zip((Instant.ED, Instant.ES), pair, strict=True)
        }
        work.annotated_ef = _ef_of(geometries)
    return summary


def _with_member_spread(
    patient: PatientRecord, images: list[ImageRecord], work: _PatientWork, options: ChunkOptions
) -> tuple[PatientRecord, list[ImageRecord]]:
    """The rows with the members' spread (``--uncertainty``); unchanged without members."""
    members = {
        key: item.members
        for key, item in work.images.items()
        if item.members and item.mask is not None and item.image is not None
    }
    if not members:
        return patient, images
    spacings = {key: work.images[key].image.spacing for key in members}

    def camus_ef(masks, spacings_of):
        found = _camus_ef(masks, spacings_of, options.camus_grid_mm)
        return float(found.ef_pct) if isinstance(found, CamusResult) else None

    spread = member_spread(members, spacings, camus_ef)
    patient = dataclasses.replace(
        patient,
        ef_pct_sd=spread.ef_pct_sd,
        ef_camus_pct_sd=spread.ef_camus_pct_sd,
        n_members=spread.n_members,
    )
    images = [
        dataclasses.replace(record, lv_dice_members=spread.lv_dice.get(_key_of(record)))
        for record in images
    ]
    return patient, images


def _key_of(record: ImageRecord) -> ImageKey:
    return ImageKey(View(record.view), Instant(record.instant))


def _ef_of(geometries: dict[ImageKey, ViewGeometry | GeometryFailure]) -> float | None:
    """Biplane EF of the measurable images among ``geometries`` (None without all four)."""
    usable = {k: g for k, g in geometries.items() if isinstance(g, ViewGeometry)}
    return patient_volumes(usable).ef_pct


def _with_frames_columns(
    patient: PatientRecord, work: _PatientWork, summary: BeatSummary | None
) -> PatientRecord:
    """The patient row with where its frames came from, the beats, and the annotated frames."""
    ref = work.ref
    fields: dict[str, object] = {
        "input_format": ref.format.value,
        "spacing_source": _spacing_source(work).value,
        "frames_source": work.frames_source.value,
    }
    if patient.status == Status.FAILED.value and not work.images:
        fields["frames_source"] = None
    for key, item in work.images.items():
        if item.frame is not None:
            fields[f"{key.instant.value.lower()}_frame_{key.view.value.lower()}"] = item.frame
    if work.frames_source == FramesSource.DETECTED:
        for view, (ed, es) in _annotated_frames(work).items():
            fields[f"ed_frame_{view.value.lower()}_annotated"] = ed
            fields[f"es_frame_{view.value.lower()}_annotated"] = es
        if work.annotated:
            fields["ef_annotated_pct"] = _ef_of(
                {
                    key: measure_lv(item.mask, item.image.spacing)
                    for key, item in work.annotated.items()
                    if item.mask is not None and item.image is not None
                }
            )
        else:
            fields["ef_annotated_pct"] = work.annotated_ef
    if summary is not None:
        fields.update(
            n_beats=summary.n_beats,
            ef_beats_sd_pct=summary.ef_sd_pct,
            heart_rate_bpm=summary.heart_rate_bpm,
        )
        if summary.n_beats > 1:  # the EF of a loop is the mean over its beats
            for view, (edv, esv, ef) in summary.single.items():
                suffix = view.value.lower()
                fields.update({f"edv_{suffix}_ml": edv, f"esv_{suffix}_ml": esv})
                fields[f"ef_{suffix}_pct"] = ef
            if summary.ef_pct is not None and patient.ef_pct is not None:
                fields.update(
                    ef_pct=summary.ef_pct,
                    edv_ml=summary.edv_ml,
                    esv_ml=summary.esv_ml,
                    ef_category=ef_category(summary.ef_pct).value,
                )
    return dataclasses.replace(patient, **fields)


def _used_loops(work: _PatientWork) -> dict[View, LoopWork]:
    """The loops whose frames became the patient's images."""
    return {
        key.view: work.loops[key.view]
        for key, item in work.images.items()
        if item.frame is not None and key.view in work.loops
    }


def _spacing_source(work: _PatientWork) -> SpacingSource:
    """Where the spacing of the patient's measured images came from (``none`` when any of them
    has no trusted spacing; a manifest's, then a DICOM region's, then the header's otherwise)."""
    loops = _used_loops(work) or {v: loop for v, loop in work.loops.items() if loop.frames}
    sources = {loop.spacing_source for loop in loops.values()}
    if any(item.frame is None for item in work.images.values()):
        sources.add(SpacingSource.HEADER)  # a still
    for source in (
        SpacingSource.NONE,
        SpacingSource.MANIFEST,
        SpacingSource.DICOM_REGION,
    ):
        if source in sources:
            return source
    return SpacingSource.HEADER


_IMAGE_SCALED_FIELDS = (
    "spacing_row_mm",
    "spacing_col_mm",
    "lv_area_mm2",
    "lv_length_mm",
    "volume_single_ml",
    "volume_area_length_ml",
    "hd_lv_mm",
    "hd95_lv_mm",
    "mad_lv_mm",
    "lv_border_length_mm",
    "la_area_mm2",
    "la_length_mm",
)
# flags of the LA volume, judged in mm: meaningless (and the volume null) without a spacing
_ATRIUM_FLAGS = frozenset({QCFlag.LA_CUT.value, QCFlag.LA_LENGTH_MISMATCH.value})
_PATIENT_VOLUMES = (
    "edv_ml",
    "esv_ml",
    "edv_camus_ml",
    "esv_camus_ml",
    *SCALED_COLUMNS,
    "la_volume_gt_ml",
    "la_volume_al_gt_ml",
)


def _apply_spacing(
    patient: PatientRecord, images: list[ImageRecord], work: _PatientWork
) -> tuple[PatientRecord, list[ImageRecord]]:
    """Null every length, area and volume measured without a trusted spacing.

    Loops without one were measured on :data:`NOMINAL_SPACING` (pixel units): their EF and
    other ratios stand, their millimetres and millilitres are not written. The biplane EF needs
    both views on one scale: with one view calibrated and the other not, it is null (reason in
    ``error``). The CAMUS-compatible EF, defined on a grid in millimetres, is null too.
    """
    unscaled = {v for v, loop in _used_loops(work).items() if not loop.scaled}
    if not unscaled:
        return patient, images
    reasons = [  # an input without any spacing says so in spacing_source; a refused one, why
        f"{work.ref.patient_id} {view.value} loop: pixel spacing refused "
        f"({work.loops[view].spacing_problem}); volumes and lengths not reported"
        for view in sorted(unscaled)
        if work.loops[view].spacing_problem
    ]
    images = [
        dataclasses.replace(
            r,
            **dict.fromkeys(_IMAGE_SCALED_FIELDS),
            qc_flags=[f for f in r.qc_flags if f not in SIZE_FLAGS | _ATRIUM_FLAGS],
        )
        if View(r.view) in unscaled
        else r
        for r in images
    ]
    changes: dict[str, object] = dict.fromkeys(_PATIENT_VOLUMES)
    changes.update(ef_camus_pct=None, ef_camus_gt_pct=None)
    changes["qc_flags"] = [f for f in patient.qc_flags if f not in _ATRIUM_FLAGS]  # mm limits
    for view in unscaled:
        suffix = view.value.lower()
        changes.update({f"edv_{suffix}_ml": None, f"esv_{suffix}_ml": None})
    scaled_views = {v for v in _used_loops(work) if v not in unscaled}
    if scaled_views or any(item.frame is None for item in work.images.values()):
        changes.update(ef_pct=None, ef_category=None)  # two scales: no biplane EF
        reasons.append(f"{work.ref.patient_id}: no biplane EF: one view has a spacing, one not")
    error = "; ".join(filter(None, [patient.error, *reasons]))
    return dataclasses.replace(patient, error=error, **changes), images
