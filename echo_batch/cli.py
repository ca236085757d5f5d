"""Command-line interface (``echo-batch`` / ``python -m echo_batch``).

Heavy imports (torch, SimpleITK, Prefect) happen inside the commands so that ``--help`` is instant.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, TextIO

import typer

from echo_batch.domain import (
    Device,
    FramesMode,
    ImageFormat,
    Precision,
    SegmentationSource,
    Split,
    TrainPrecision,
)

app = typer.Typer(
    help="Batch LV ejection fraction for echocardiography cohorts in the CAMUS layout.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
logger = logging.getLogger("echo_batch")


_PLAIN_FORMAT = "%(asctime)s %(levelname)-8s %(message)s"
_TIME_FORMAT = "%H:%M:%S"


def _log_handler(stream: TextIO) -> logging.Handler:
    """Rich on a terminal; one plain, never wrapped line per record otherwise (CI logs, pipes).

    Rich wraps at the terminal width, and at 80 columns when the stream is not a terminal, which
    would split one patient's problem over several lines of a log file.
    """
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        from rich.console import Console
        from rich.logging import RichHandler

        return RichHandler(console=Console(file=stream), show_path=False)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(_PLAIN_FORMAT, _TIME_FORMAT))
    return handler


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        datefmt=_TIME_FORMAT,
        handlers=[_log_handler(sys.stderr)],
    )
    for noisy in ("httpx", "httpcore", "distributed", "prefect.server"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not verbose:
        # Importing distributed (later, lazily) sets its loggers from Dask's configuration, back to
        # INFO by default, which printed Dask's shutdown chatter and its benign CommClosedError
        # tracebacks into the run log. The same setting reaches the worker processes.
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")


DataArg = Annotated[
    Path,
    typer.Argument(
        help="DATA: a CAMUS 2019/2023 root, a folder of patient folders, an EchoNet-Dynamic "
        "root (FileList.csv, Videos/) or a manifest .csv (patient_id, view, path, ...)."
    ),
]
FilesRootOpt = Annotated[
    Path | None,
    typer.Option(
        help="For a manifest: the folder its files may lie in (default: the manifest's folder)."
    ),
]


@app.command()
def discover(
    data: DataArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
    files_root: FilesRootOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Show what a run would process: patients per split, files found, problems with reasons."""
    from echo_batch.errors import InputError
    from echo_batch.io.discovery import discover as run_discovery
    from echo_batch.io.inventory import manifest_summary, render_summary

    _setup_logging(verbose)
    try:
        manifest = run_discovery(data, files_root=files_root)
    except InputError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    summary = manifest_summary(manifest)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        typer.echo(render_summary(summary))


@app.command()
def train(
    data: DataArg,
    out: Annotated[Path, typer.Option("--out", help="Bundle directory to write.")],
    epochs: Annotated[int, typer.Option(help="Passes over the training split.")] = 40,
    batch_size: Annotated[int, typer.Option(help="Images per step.")] = 8,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 2e-3,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    precision: Annotated[
        TrainPrecision,
        typer.Option(help="bf16 (autocast), fp32, or auto: bf16 where the device has it natively."),
    ] = TrainPrecision.AUTO,
    device: Annotated[Device, typer.Option(help="Where training runs.")] = Device.AUTO,
    features: Annotated[
        str,
        typer.Option(help="U-Net channels per level, top to bottom, comma-separated."),
    ] = "32,32,64,128,128,128",
    init_from: Annotated[
        Path | None,
        typer.Option(
            help="Start from this bundle's weights; a narrower --features keeps the channels "
            "with the largest batch-norm scales (network slimming), then fine-tunes.",
        ),
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/checkpoint.pt.")] = True,
    max_minutes: Annotated[float | None, typer.Option(help="Stop after this many minutes.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Train the U-Net on the training split, select on validation, write a model bundle."""
    from echo_batch.model.bundle import BundleError
    from echo_batch.model.slim import SlimError
    from echo_batch.model.train import TrainConfig
    from echo_batch.model.train import train as run_training

    _setup_logging(verbose)
    try:
        levels = tuple(int(f) for f in features.split(","))
    except ValueError:
        levels = ()
    if len(levels) < 2 or min(levels) < 1:
        raise typer.BadParameter(
            f"expected positive integers separated by commas, got {features!r}",
            param_hint="--features",
        )
    config = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        precision=precision.value,
        features=levels,
        init_from=str(init_from) if init_from else None,
    )
    try:
        run_training(
            data, out, config, device_name=device.value, resume=resume, max_minutes=max_minutes
        )
    except (BundleError, SlimError) as exc:
        typer.echo(f"error: --init-from {init_from}: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write the synthetic cohort into.")],
    patients: Annotated[int, typer.Option(min=1, help="Number of patients.")] = 20,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same bytes).")] = 0,
    fmt: Annotated[
        ImageFormat,
        typer.Option(
            "--format",
            help="nifti (CAMUS 2023 layout), mhd (2019), echonet (EchoNet-Dynamic layout: one "
            "4CH video per patient, 112 px, tracings; --max-side and --loops do not apply), or "
            "dicom (OUT/dicom: one multi-frame file per view, JPEG or uncompressed, calibrated "
            "tissue region, names and birth dates in the headers; full loops).",
        ),
    ] = ImageFormat.NIFTI,
    max_side: Annotated[
        int | None, typer.Option(help="Draw every view on a max_side x max_side grid (scale runs).")
    ] = None,
    loops: Annotated[
        bool,
        typer.Option(
            "--loops",
            help="Cine loops instead of half sequences: full loops of 1-4 beats or half "
            "sequences, some patients without stills; per-frame truth in truth_frames.csv.",
        ),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Write a CAMUS-layout cohort of analytic LV shapes with known volumes (truth.csv)."""
    from echo_batch.synth import synth_cohort

    _setup_logging(verbose)
    if fmt == ImageFormat.ECHONET:
        from echo_batch.synth.echonet import synth_echonet

        root = synth_echonet(out, patients, seed=seed)
        typer.echo(f"wrote {patients} synthetic EchoNet videos to {root} (truth in truth.csv)")
        return
    if fmt == ImageFormat.DICOM:
        from echo_batch.synth.dicom import synth_dicom_cohort

        root = synth_dicom_cohort(out, patients, seed=seed, max_side=max_side)
        typer.echo(f"wrote {patients} synthetic DICOM patients to {root / 'dicom'} (truth.csv)")
        return
    root = synth_cohort(out, patients, seed=seed, fmt=fmt.value, max_side=max_side, loops=loops)
    typer.echo(f"wrote {patients} synthetic patients to {root} (truth in {root / 'truth.csv'})")


@app.command()
def evaluate(
    data: DataArg,
    model: Annotated[Path | None, typer.Option(help="Model bundle (default: bundled).")] = None,
    split: Annotated[Split, typer.Option(help="Split to evaluate on.")] = Split.TESTING,
    record: Annotated[
        bool, typer.Option(help="Write the metrics into the bundle metadata.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Segmentation metrics per instant and EF agreement of a bundle on one split."""
    from echo_batch.model.bundle import DEFAULT_BUNDLE
    from echo_batch.model.evaluate import evaluate_bundle

    _setup_logging(verbose)
    metrics = evaluate_bundle(model or DEFAULT_BUNDLE, data, split, record=record)
    typer.echo(json.dumps(metrics, indent=2))


@app.command()
def ensemble(
    out: Annotated[Path, typer.Argument(help="Directory of the new ensemble bundle.")],
    networks: Annotated[
        list[Path], typer.Argument(help="Bundles of the member networks (ordinary bundles).")
    ],
    name: Annotated[
        str | None, typer.Option(help="Name of the ensemble (default: OUT's name).")
    ] = None,
    variant: Annotated[
        list[str] | None,
        typer.Option(
            help="Test-time variant SCALE:GAMMA every network runs, repeatable (default: the "
            "five of --uncertainty; 1:1 alone runs each network once)."
        ),
    ] = None,
) -> None:
    """Write an ensemble bundle: the networks (referenced, their weights pinned) x the variants.

    ``echo-batch run --model OUT`` then segments every image with every member, takes the labels
    from their mean probabilities and writes the SD of EF between members.
    """
    from echo_batch.errors import EchoBatchError
    from echo_batch.model.ensemble import DEFAULT_VARIANTS
    from echo_batch.model.ensemble_bundle import save_ensemble
    from echo_batch.model.tta import Variant

    try:
        variants = (
            [Variant(*(float(x) for x in v.split(":", 1))) for v in variant]
            if variant
            else list(DEFAULT_VARIANTS)
        )
    except ValueError as exc:
        raise typer.BadParameter(
            f"{exc} (SCALE:GAMMA, e.g. 0.9:1)", param_hint="--variant"
        ) from None
    try:
        built = save_ensemble(out, name or out.name, networks, [v.to_dict() for v in variants])
    except EchoBatchError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(
        f"wrote {built.model_id}: {len(built.networks)} network(s) x {len(built.variants)} "
        f"variant(s) = {built.n_members} members per image"
    )


@app.command()
def report(
    out: Annotated[Path, typer.Argument(help="OUT folder of a finished run.")],
    worst: Annotated[int, typer.Option(min=0, help="Patients in the worst-case gallery.")] = 6,
    data: Annotated[
        Path | None,
        typer.Option(help="DATA root of the images (default: the one recorded in run.json)."),
    ] = None,
    recompute: Annotated[
        bool,
        typer.Option(help="Segment the gallery patients again when the run saved no masks."),
    ] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Write OUT/report/index.html: agreement, QC flags, results by quality, worst cases.

    Plots are PNG files under OUT/report/plots and OUT/report/gallery; the figures shown are also
    in OUT/report/summary.json.
    """
    from echo_batch.report import write_report

    _setup_logging(verbose)
    missing = [n for n in ("patients.parquet", "images.parquet") if not (out / n).is_file()]
    if missing:
        typer.echo(f"error: {out}: no {' or '.join(missing)} (not the OUT of a run)", err=True)
        raise typer.Exit(2)
    index = write_report(out, worst=worst, data=data, recompute=recompute)
    typer.echo(f"report written to {index}")


@app.command()
def run(
    data: DataArg,
    out: Annotated[Path, typer.Option("--out", help="Output folder for the Parquet files.")],
    model: Annotated[
        Path | None,
        typer.Option(
            help="Model bundle (default: bundled). An ensemble bundle runs all its members and "
            "fills the uncertainty columns, as --uncertainty does."
        ),
    ] = None,
    segmentation: Annotated[
        SegmentationSource,
        typer.Option(help="model: segment with the U-Net; gt: measure the expert masks."),
    ] = SegmentationSource.MODEL,
    chunk_size: Annotated[
        int | None,
        typer.Option(min=1, help="Patients per chunk (default: about 8 chunks per worker, 16-64)."),
    ] = None,
    device: Annotated[Device, typer.Option(help="Where the network runs.")] = Device.AUTO,
    precision: Annotated[
        Precision, typer.Option(help="Arithmetic of the network.")
    ] = Precision.AUTO,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Images per forward pass.")] = None,
    camus_grid_mm: Annotated[
        float | None,
        typer.Option(
            min=0.01, help="Upsample LV masks to this pixel size (mm) for the CAMUS method."
        ),
    ] = None,
    compile_model: Annotated[
        bool, typer.Option("--compile", help="torch.compile the model (long runs).")
    ] = False,
    frames: Annotated[
        FramesMode,
        typer.Option(
            help="ED/ES frames: annotated (stills, cfg frames), detected (from the loops, the "
            "annotated ones recorded beside), auto (annotated where present)."
        ),
    ] = FramesMode.AUTO,
    uncertainty: Annotated[
        bool,
        typer.Option(
            "--uncertainty",
            help="Segment every image with the members of an ensemble: EF from their mean "
            "probabilities and its SD between them (ef_pct_sd, ef_camus_pct_sd). Without --model "
            "the uncertainty bundle (the first network on 5 test-time variants, chosen on "
            "validation); with --model DIR that network on the 5 variants. Model only.",
        ),
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Local Dask CPU worker processes (default: one per core). On a CUDA host a "
            "model run adds one GPU worker, and the default is one per core less one.",
        ),
    ] = None,
    dask_address: Annotated[
        str | None,
        typer.Option(
            help="Existing Dask scheduler, tcp://HOST:PORT.", envvar="DASK_SCHEDULER_ADDRESS"
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            help="Skip patients already ok in OUT (same model and settings); --no-resume "
            "recomputes all and keeps only this run's settings in OUT."
        ),
    ] = True,
    save_masks: Annotated[
        bool, typer.Option(help="Write predicted label maps to OUT/masks.")
    ] = False,
    serial: Annotated[
        bool, typer.Option(help="Run in this process without Prefect or Dask (reference path).")
    ] = False,
    files_root: FilesRootOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Measure every discovered patient and write patients.parquet, images.parquet, run.json.

    Runs the Prefect flow ``cohort-ef`` on Dask (an embedded Prefect API starts by itself; a local
    Dask cluster unless --dask-address is given). --serial runs the same chunks in this process,
    through the same output store (lock, resume, parts, compaction, masks).
    """
    from echo_batch.errors import EchoBatchError
    from echo_batch.run.cohort import preflight
    from echo_batch.run.options import ChunkOptions, RunOptions

    _setup_logging(verbose)
    if uncertainty and segmentation != SegmentationSource.MODEL:
        raise typer.BadParameter(
            "needs the model's segmentation (--segmentation model)", param_hint="--uncertainty"
        )
    options = RunOptions(
        data=data,
        out=out,
        chunk=ChunkOptions(
            segmentation=segmentation,
            model=model,
            device=device,
            precision=precision,
            batch_size=batch_size,
            camus_grid_mm=camus_grid_mm,
            compile=compile_model,
            frames=frames,
            uncertainty=uncertainty,
        ),
        chunk_size=chunk_size,
        workers=workers,
        dask_address=dask_address,
        resume=resume,
        save_masks=save_masks,
        files_root=files_root,
    )
    try:
        # DATA, the model bundle (weights loaded) and OUT's settings, before anything starts
        model_id = preflight(options)
        with _progress_bar() as progress:
            if serial:
                from echo_batch.run.serial import run_cohort

                record = run_cohort(options, model_id=model_id, progress=progress)
            else:
                record = _run_flow(options, progress)
    except EchoBatchError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(render_run_summary(record))
    if serial:
        from echo_batch.report import write_report_safely

        write_report_safely(out)  # the flow writes it at its end


class _RichProgress:
    """A run's progress (:class:`echo_batch.run.cohort.Progress`) drawn as a rich progress bar."""

    def __init__(self, bar) -> None:
        self._bar = bar
        self._task = bar.add_task("patients", total=None)

    def start(self, total: int) -> None:
        self._bar.update(self._task, total=total)

    def advance(self, patients: int) -> None:
        self._bar.advance(self._task, patients)


@contextlib.contextmanager
def _progress_bar() -> Iterator[_RichProgress]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress(
        *Progress.get_default_columns()[:1], BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
    ) as bar:
        yield _RichProgress(bar)


def _run_flow(options, progress: _RichProgress) -> dict:
    """Run the ``cohort-ef`` flow on an embedded Prefect API; its cluster starts first.

    The embedded API is a server process of this run (:mod:`flows.prefect_api`) that
    ends with it, as the local Dask workers do, even when this process is killed.
    """
    _quiet_embedded_prefect()
    from echo_batch.run.cluster import discard_prestarted, prestart_cluster
    from flows.prefect_api import prefect_api

    # the workers start on the free core while the embedded Prefect API starts
    prestart_cluster(
        options.dask_address, options.workers, options.chunk.segmentation, options.chunk.device
    )
    try:
        with prefect_api():
            import flows.cohort_ef as cohort_flow

            return cohort_flow.cohort_ef(options, progress=progress)
    finally:
        discard_prestarted()


def _quiet_embedded_prefect() -> None:
    """No analytics from the embedded Prefect API: offline it logged an ERROR on every run.

    Set before Prefect is imported (its settings are read then); a user's own setting wins.
    """
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def render_run_summary(record: dict) -> str:
    """Closing summary of a run for the terminal."""
    from echo_batch.qc.agreement import summary_line

    s = record["summary"]
    lines = [
        f"patients: {s['patients']} "
        + " ".join(f"{k} {v}" for k, v in sorted(s["status"].items()))
        + f"; qc_pass {s['qc_pass']}",
        f"wall time {record['wall_seconds']:.1f} s, {record['patients_per_second']} patients/s",
    ]
    if s["ef_pct"]:
        q = s["ef_pct"]
        lines.append(f"EF (biplane) median {q['p50']:.1f} %, IQR {q['p25']:.1f}-{q['p75']:.1f} %")
    for name, stats in s["agreement"].items():
        if stats:
            lines.append(summary_line(name, stats))
    lines.append(f"outputs in {record['out']}")
    return "\n".join(lines)


def main() -> None:
    """Entry point."""
    app()
