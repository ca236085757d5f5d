"""Command-line interface (``echo-batch`` / ``python -m echo_batch``).

Heavy imports (torch, SimpleITK, Prefect) happen inside the commands so that ``--help`` is instant.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Batch LV ejection fraction for echocardiography cohorts in the CAMUS layout.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
logger = logging.getLogger("echo_batch")


def _setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        datefmt="%H:%M:%S",
        handlers=[RichHandler(show_path=False, rich_tracebacks=False)],
    )


DataArg = Annotated[
    Path, typer.Argument(help="DATA root: CAMUS 2019/2023 root or a folder of patients.")
]


@app.command()
def discover(
    data: DataArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Show what a run would process: patients per split, files found, problems with reasons."""
    from echo_batch.discovery import discover as run_discovery
    from echo_batch.errors import InputError
    from echo_batch.inventory import manifest_summary, render_summary

    _setup_logging(verbose)
    try:
        manifest = run_discovery(data)
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
    precision: Annotated[str, typer.Option(help="bf16 (autocast) or fp32.")] = "bf16",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    resume: Annotated[bool, typer.Option(help="Continue from OUT/checkpoint.pt.")] = True,
    max_minutes: Annotated[float | None, typer.Option(help="Stop after this many minutes.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Train the U-Net on the training split, select on validation, write a model bundle."""
    from echo_batch.model.train import TrainConfig
    from echo_batch.model.train import train as run_training

    _setup_logging(verbose)
    if precision not in ("bf16", "fp32"):
        raise typer.BadParameter("precision must be bf16 or fp32")
    config = TrainConfig(
        epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, precision=precision
    )
    run_training(data, out, config, device_name=device, resume=resume, max_minutes=max_minutes)


def main() -> None:
    """Entry point."""
    app()
