"""Domain vocabulary of CAMUS echocardiography: views, instants, labels and typed records.

Every other module speaks in these terms instead of bare strings and integers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from pathlib import Path


class View(StrEnum):
    """Apical long-axis view."""

    A2C = "2CH"
    A4C = "4CH"


class Instant(StrEnum):
    """Cardiac phase of a still frame."""

    ED = "ED"
    ES = "ES"


class Label(IntEnum):
    """CAMUS segmentation labels."""

    BG = 0
    LV = 1
    MYO = 2
    LA = 3


class Split(StrEnum):
    """Official CAMUS data split (or none when no split files exist)."""

    TRAINING = "training"
    VALIDATION = "validation"
    TESTING = "testing"
    NONE = "none"


class Status(StrEnum):
    """Outcome of processing one patient or one image."""

    OK = "ok"
    PARTIAL = "partial"
    FAILED = "failed"


class SegmentationSource(StrEnum):
    """Which masks a run measures."""

    MODEL = "model"  # the U-Net's predictions
    GT = "gt"  # the expert ground-truth masks


class Device(StrEnum):
    """Where the network runs."""

    AUTO = "auto"  # a CUDA GPU when one is visible, else the CPU
    CPU = "cpu"
    CUDA = "cuda"


class Precision(StrEnum):
    """Arithmetic of the network's forward pass."""

    AUTO = "auto"  # bf16 on CUDA and on bf16-capable CPUs, else fp16 (CUDA) or fp32
    BF16 = "bf16"
    FP16 = "fp16"
    FP32 = "fp32"


class TrainPrecision(StrEnum):
    """Arithmetic of training steps."""

    AUTO = "auto"  # bf16 where the device has native bf16, else fp32
    BF16 = "bf16"  # autocast
    FP32 = "fp32"


class ImageFormat(StrEnum):
    """File format a synthetic cohort is written in."""

    NIFTI = "nifti"  # CAMUS 2023 layout
    MHD = "mhd"  # CAMUS 2019 layout
    ECHONET = "echonet"  # EchoNet-Dynamic layout: FileList.csv, Videos/*.avi, VolumeTracings.csv
    DICOM = "dicom"  # one flat folder of multi-frame ultrasound DICOM files (JPEG and uncompressed)


class FramesMode(StrEnum):
    """Which frames of a patient are measured (``--frames``)."""

    AUTO = "auto"  # the annotated ED/ES where the input has them, detected from the loop otherwise
    ANNOTATED = "annotated"  # only annotated frames (stills, or cfg frame indices into a loop)
    DETECTED = "detected"  # detected from the loops, the annotated frames recorded beside


class FramesSource(StrEnum):
    """Where the ED and ES frames of a patient's results came from."""

    ANNOTATED = "annotated"
    DETECTED = "detected"


class InputFormat(StrEnum):
    """Format of a patient's input files."""

    CAMUS2019 = "camus2019"
    CAMUS2023 = "camus2023"
    DICOM = "dicom"  # DICOM files exported from an archive (ultrasound, single- or multi-frame)
    ECHONET = "echonet"  # EchoNet-Dynamic layout: FileList.csv + Videos/*.avi
    MANIFEST = "manifest"  # any supported file listed by a manifest CSV


class SpacingSource(StrEnum):
    """Where a clip's pixel spacing came from (``none``: volumes are null, EF is still measured)."""

    HEADER = "header"  # the image header (NIfTI, MetaImage)
    DICOM_REGION = "dicom_region"  # the 2-D tissue region of DICOM's Sequence of Ultrasound Regions
    MANIFEST = "manifest"  # spacing_row_mm / spacing_col_mm of a manifest row
    NONE = "none"  # no spacing, or a calibration that was refused (the reason is recorded)


class LoopKind(StrEnum):
    """What stretch of the cardiac cycle a loop file holds."""

    HALF = "half"  # one ED -> ES stretch (CAMUS half sequences; stored ES -> ED in some patients)
    FULL = "full"  # one or more whole beats


class Release(StrEnum):
    """CAMUS release a file layout follows."""

    CAMUS2019 = "2019"  # .mhd/.raw, Info_2CH.cfg with LVedv/LVesv/LVef
    CAMUS2023 = "2023"  # .nii.gz, Info_*.cfg with EF/FrameRate


VIEWS: tuple[View, ...] = (View.A2C, View.A4C)
INSTANTS: tuple[Instant, ...] = (Instant.ED, Instant.ES)


@dataclass(frozen=True)
class ImageKey:
    """Identifies one still image of a patient."""

    view: View
    instant: Instant

    def __str__(self) -> str:
        return f"{self.view.value}_{self.instant.value}"


IMAGE_KEYS: tuple[ImageKey, ...] = tuple(ImageKey(v, i) for v in VIEWS for i in INSTANTS)


@dataclass(frozen=True)
class ImageFiles:
    """Files of one (view, instant) still frame.

    Attributes:
        image: path of the B-mode image, or None when missing.
        gt: path of the expert label map, or None when absent.
    """

    image: Path | None
    gt: Path | None = None


@dataclass(frozen=True)
class CfgInfo:
    """Contents of one CAMUS ``Info_{VIEW}.cfg`` file.

    Attributes:
        ed_frame: 1-based end-diastolic frame index in the sequence.
        es_frame: 1-based end-systolic frame index (may be smaller than ``ed_frame``).
        n_frames: number of frames of the sequence.
        sex: "M" or "F" when given.
        age: years.
        image_quality: "Good", "Medium" or "Poor" when given.
        ef_pct: patient EF in percent (2023 ``EF`` or 2019 ``LVef``).
        edv_ml: end-diastolic volume, mL (2019 ``LVedv`` only).
        esv_ml: end-systolic volume, mL (2019 ``LVesv`` only).
        frame_rate_hz: frames per second (2023 only).
        extra: any other keys, kept verbatim.
    """

    ed_frame: int | None = None
    es_frame: int | None = None
    n_frames: int | None = None
    sex: str | None = None
    age: float | None = None
    image_quality: str | None = None
    ef_pct: float | None = None
    edv_ml: float | None = None
    esv_ml: float | None = None
    frame_rate_hz: float | None = None
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ClipMeta:
    """What an input other than a CAMUS folder says about one view's loop.

    CAMUS patients carry this in their ``Info_*.cfg`` files instead (``PatientRef.cfgs``).

    Attributes:
        input_format: format of the loop file (decides the reader).
        ed_frame: annotated end-diastolic frame, 0-based, or None.
        es_frame: annotated end-systolic frame, 0-based, or None.
        spacing_mm: ``(row_mm, col_mm)`` given by a manifest; it replaces the file's own.
        frame_time_ms: time between frames given by the input (manifest, FileList), ms.
        n_frames: frame count the input declares (EchoNet FileList); the reader checks it.
        tracings: EchoNet ``VolumeTracings.csv`` holding expert LV tracings of this loop.
    """

    input_format: InputFormat
    ed_frame: int | None = None
    es_frame: int | None = None
    spacing_mm: tuple[float, float] | None = None
    frame_time_ms: float | None = None
    n_frames: int | None = None
    tracings: Path | None = None


@dataclass(frozen=True)
class PatientRef:
    """One discovered patient: where its files are and what is missing.

    Attributes:
        patient_id: folder name, e.g. "patient0001".
        folder: patient folder.
        release: file layout the patient follows.
        split: official split when split files exist.
        images: files per (view, instant) that exist.
        sequences: loop file and optional per-frame gt per view.
        loop_kinds: what each view's loop holds (half sequence or full loop).
        cfgs: cfg file per view that exists.
        problems: human-readable notes on odd or missing entries.
        input_format: format of the input (None: the CAMUS format of ``release``).
        clip_meta: per view with a loop, what a non-CAMUS input says about it.
        ef_ref_pct: reference EF given by the input (manifest, EchoNet FileList), percent.
    """

    patient_id: str
    folder: Path
    release: Release
    split: Split = Split.NONE
    images: dict[ImageKey, ImageFiles] = field(default_factory=dict)
    sequences: dict[View, ImageFiles] = field(default_factory=dict)
    loop_kinds: dict[View, LoopKind] = field(default_factory=dict)
    cfgs: dict[View, Path] = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    input_format: InputFormat | None = None
    clip_meta: dict[View, ClipMeta] = field(default_factory=dict)
    ef_ref_pct: float | None = None

    @property
    def format(self) -> InputFormat:
        """Format of the patient's input."""
        if self.input_format is not None:
            return self.input_format
        return InputFormat.CAMUS2019 if self.release == Release.CAMUS2019 else InputFormat.CAMUS2023

    @property
    def views(self) -> tuple[View, ...]:
        """Views with at least one still image."""
        return tuple(v for v in VIEWS if any(k.view == v for k in self.images))

    @property
    def has_gt(self) -> bool:
        """True when every present image has a ground-truth label map."""
        return bool(self.images) and all(f.gt is not None for f in self.images.values())

    @property
    def complete(self) -> bool:
        """True when all four still images are present."""
        return all(k in self.images for k in IMAGE_KEYS)
