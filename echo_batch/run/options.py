"""The options of a cohort run, written out once and passed as one frozen object.

:class:`ChunkOptions` is what the chunk function needs (how to segment and measure);
:class:`RunOptions` adds where the run reads and writes and how it is executed. The CLI builds
them, the serial run and the Prefect flow take a :class:`RunOptions`, and the workers receive its
:meth:`RunOptions.chunk_options`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from echo_batch.domain import Device, FramesMode, Precision, SegmentationSource

MASKS_DIR = "masks"  # OUT/masks/<patient>/<patient>_<VIEW>_<INSTANT>_pred.nii.gz


UNCERTAINTY_METHOD = "test-time-variants-5"
"""What ``--uncertainty`` runs, as recorded in each row's ``measure_config`` (a run with another
method, or without, does not resume from these rows)."""


@dataclass(frozen=True)
class SimulatedDevice:
    """A simulated inference device (tests and benchmarks of the GPU stage; no CLI option).

    Attributes:
        batch_s: seconds per forward pass, slept with the GIL released.
        image_s: seconds per image in a pass, slept.
        log: JSON-lines file that receives one line per batch (None: not logged).
    """

    batch_s: float = 0.0
    image_s: float = 0.0
    log: Path | None = None


@dataclass(frozen=True)
class ChunkOptions:
    """How a chunk is processed.

    Attributes:
        segmentation: measure the model's masks or the ground truth.
        model: bundle directory (None: the default bundle).
        device: where the network runs.
        precision: arithmetic of the forward pass.
        batch_size: images per forward pass (None: device default).
        threads: torch threads per process (None: torch default).
        compile: compile the model (``torch.compile``; pays off on long runs).
        save_masks_to: when set, each predicted label map is written to
            ``<save_masks_to>/<patient>/<patient>_<VIEW>_<INSTANT>_pred.nii.gz`` with the input's
            spacing and origin (model segmentation only); never through a symbolic link (the
            patient's masks are then skipped and its record carries the error).
        camus_grid_mm: when set (e.g. 0.308), the CAMUS-compatible method first upsamples each LV
            mask to pixels of this size, the grid its pixel constants assume (slower, closer to the
            CAMUS reference on down-sampled images such as CAMUS-224).
        frames: which frames are measured: the annotated ED/ES (stills, cfg frame indices into a
            loop), ED/ES detected from the loops, or ``auto`` (annotated where present).
        uncertainty: segment every image with the members of an ensemble, one forward pass
            each: without ``model`` the uncertainty bundle (:attr:`bundle`), with ``model`` that
            network on the test-time variants (:data:`echo_batch.model.ensemble.DEFAULT_VARIANTS`;
            an ensemble bundle runs its own members with or without this flag). The labels come
            from the members' mean probabilities, and every patient gets the SD of its EFs
            between the members (``ef_pct_sd``, ``ef_camus_pct_sd``). Model only.
        simulated_device: when set, the engine is :class:`echo_batch.model.simulated.
            SimulatedEngine` on this simulated device instead of the network (tests and
            benchmarks of the GPU stage on machines without one; the CLI never sets it).
    """

    segmentation: SegmentationSource = SegmentationSource.MODEL
    model: Path | None = None
    device: Device = Device.AUTO
    precision: Precision = Precision.AUTO
    batch_size: int | None = None
    threads: int | None = None
    compile: bool = False
    save_masks_to: Path | None = None
    camus_grid_mm: float | None = None
    frames: FramesMode = FramesMode.AUTO
    simulated_device: SimulatedDevice | None = None
    uncertainty: bool = False

    def __post_init__(self) -> None:
        # plain strings (tests, Prefect parameters, older callers) become the enums
        object.__setattr__(self, "segmentation", SegmentationSource(self.segmentation))
        object.__setattr__(self, "device", Device(self.device))
        object.__setattr__(self, "precision", Precision(self.precision))
        object.__setattr__(self, "frames", FramesMode(self.frames))
        if isinstance(self.simulated_device, dict):  # a mapping from a deployment or JSON
            object.__setattr__(self, "simulated_device", SimulatedDevice(**self.simulated_device))
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")
        if self.uncertainty and self.segmentation != SegmentationSource.MODEL:
            raise ValueError("--uncertainty needs the model's segmentation (--segmentation model)")
        if self.camus_grid_mm is not None and not self.camus_grid_mm > 0:
            raise ValueError(f"CAMUS grid must be > 0 mm, got {self.camus_grid_mm}")

    @property
    def bundle(self) -> Path | None:
        """The bundle the network comes from: ``model``, or with ``uncertainty`` and no model the
        uncertainty ensemble (:data:`echo_batch.model.bundle.UNCERTAINTY_BUNDLE`); None: the
        default bundle."""
        if (
            self.model is None
            and self.uncertainty
            and self.segmentation == SegmentationSource.MODEL
        ):
            from echo_batch.model.bundle import UNCERTAINTY_BUNDLE

            return UNCERTAINTY_BUNDLE
        return self.model

    @property
    def uses_model(self) -> bool:
        """True when the chunk runs the network (not the expert masks)."""
        return self.segmentation == SegmentationSource.MODEL


@dataclass(frozen=True)
class RunOptions:
    """Everything a cohort run is told.

    Attributes:
        data: DATA root (CAMUS 2019/2023 layout, a folder of patient folders, an
            EchoNet-Dynamic root) or a manifest CSV.
        out: output folder (locked for the duration of the run).
        chunk: how each chunk is segmented and measured.
        chunk_size: patients per chunk (None: about 8 chunks per worker, 16-64).
        workers: local Dask worker processes (None: one per core); unused with ``dask_address``.
        dask_address: scheduler of an existing Dask cluster (None: ``DASK_SCHEDULER_ADDRESS`` or
            a local cluster).
        resume: skip patients already ``ok`` in OUT under the same measurement settings; False
            recomputes every patient and keeps only this run's settings in the output.
        save_masks: write predicted label maps under ``OUT/masks``.
        report: write ``OUT/report/`` at the end (a report failure never fails the run).
        chunk_timeout_s: a chunk sent to Dask is failed (its patients recorded as timed out) when
            it has not finished this many seconds after it started; the others go on.
        files_root: for a manifest, the folder its files may lie in (default: the manifest's
            own folder; files outside are refused).
    """

    data: Path
    out: Path
    chunk: ChunkOptions = field(default_factory=ChunkOptions)
    chunk_size: int | None = None
    workers: int | None = None
    dask_address: str | None = None
    resume: bool = True
    save_masks: bool = False
    report: bool = True
    chunk_timeout_s: float = 3600.0
    files_root: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", Path(self.data))
        if self.files_root is not None:
            object.__setattr__(self, "files_root", Path(self.files_root))
        object.__setattr__(self, "out", Path(self.out))
        if isinstance(self.chunk, dict):  # a Prefect deployment passes plain mappings
            object.__setattr__(self, "chunk", ChunkOptions(**self.chunk))
        for name in ("chunk_size", "workers"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name.replace('_', ' ')} must be >= 1, got {value}")
        if not self.chunk_timeout_s > 0:
            raise ValueError(f"chunk timeout must be > 0 s, got {self.chunk_timeout_s}")

    def chunk_options(self, threads: int | None = None) -> ChunkOptions:
        """The options each chunk of this run is processed with.

        Args:
            threads: torch threads per worker process (None: keep ``chunk.threads``).
        """
        masks = self.out / MASKS_DIR if self.save_masks and self.chunk.uses_model else None
        return dataclasses.replace(
            self.chunk,
            save_masks_to=masks,
            threads=self.chunk.threads if threads is None else threads,
        )

    def replace(self, **changes: object) -> RunOptions:
        """A copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)
