"""Ensemble bundle: several networks and the test-time variants each of them runs on.

An ensemble bundle is a directory with a ``metadata.json`` and no weights of its own::

    {
      "name": "camus224-unet-ensemble",
      "format": "ensemble",
      "networks": [{"path": "../camus224-unet", "sha256": "<sha256 of its model.pt>"}, ...],
      "variants": [{"scale": 1.0, "gamma": 1.0}, ...],
      ...free fields (how the members were chosen, their validation figures)...
    }

Each network is an ordinary bundle (:mod:`echo_batch.model.bundle`) at a path relative to the
ensemble's directory, so a shipped network is referenced rather than copied. Its weights' sha256
is pinned here and checked when the ensemble is read: a network swapped behind the ensemble's back
is refused. The members of the ensemble are every network on every variant (networks x variants
forward passes per image); the result's labels come from their mean class probabilities and the
spread of their measurements is the uncertainty of each EF.

Reading an ensemble needs neither torch nor the weights in memory (the ids of a run are known
before a worker starts); :func:`check_ensemble` loads every network completely.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from echo_batch.model.bundle import (
    METADATA_FILE,
    BundleError,
    bundle_metadata,
    bundle_model_id,
    check_bundle,
    write_json_atomic,
)

FORMAT = "ensemble"
"""Value of ``format`` in an ensemble bundle's metadata."""


@dataclass(frozen=True)
class EnsembleBundle:
    """A verified ensemble bundle.

    Attributes:
        path: the ensemble's directory.
        metadata: its parsed ``metadata.json``.
        networks: directories of the member networks (ordinary bundles), in order.
        variants: ``{"scale": s, "gamma": g}`` per test-time variant, in order (the first is
            usually the plain pass).
    """

    path: Path
    metadata: dict[str, Any]
    networks: tuple[Path, ...]
    variants: tuple[dict[str, float], ...]

    @property
    def model_id(self) -> str:
        """Ensemble name plus 12 hex digits of a hash over its networks' weights and variants."""
        return f"{self.metadata['name']}@{_content_hash(self.metadata)[:12]}"

    @property
    def n_members(self) -> int:
        """Forward passes per image: networks x variants."""
        return len(self.networks) * len(self.variants)

    @property
    def method(self) -> str:
        """What the ensemble runs, as recorded in the rows' measurement settings."""
        return _method(self.metadata)


def _method(metadata: dict[str, Any]) -> str:
    """``ensemble-<networks>x<variants>``."""
    return f"{FORMAT}-{len(metadata['networks'])}x{len(metadata['variants'])}"


def _content_hash(metadata: dict[str, Any]) -> str:
    """sha256 of what decides the ensemble's output: its networks' weights and its variants."""
    content = {
        "networks": [n["sha256"] for n in metadata["networks"]],
        "variants": metadata["variants"],
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def _metadata(directory: Path) -> dict[str, Any] | None:
    """The parsed metadata when ``directory`` holds one, else None (no error for a plain path)."""
    path = directory / METADATA_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path}: unreadable metadata ({exc})") from None


def is_ensemble(directory: Path | str | None) -> bool:
    """True when ``directory`` is an ensemble bundle (None, the default bundle, is not)."""
    if directory is None:
        return False
    metadata = _metadata(Path(directory))
    return metadata is not None and metadata.get("format") == FORMAT


def ensemble_method(directory: Path | str | None) -> str | None:
    """``ensemble-<networks>x<variants>`` for an ensemble bundle, from its metadata alone (no
    weights read; :func:`read_ensemble` verifies them); None for anything else."""
    if not is_ensemble(directory):
        return None
    return _method(_metadata(Path(directory)))  # type: ignore[arg-type]


def read_ensemble(directory: Path | str) -> EnsembleBundle:
    """Read an ensemble bundle and verify every network's weights against the pinned sha256.

    Args:
        directory: the ensemble's directory.

    Returns:
        The verified ensemble.

    Raises:
        BundleError: one line naming the file and the reason: not an ensemble, no networks or
            variants, a network missing or not the one pinned, or networks whose input grids
            differ.
    """
    path = Path(directory)
    meta_file = path / METADATA_FILE
    metadata = _metadata(path)
    if metadata is None or metadata.get("format") != FORMAT:
        raise BundleError(f"{meta_file}: not an ensemble bundle (format must be {FORMAT!r})")
    networks, variants = metadata.get("networks"), metadata.get("variants")
    if not isinstance(networks, list) or not networks:
        raise BundleError(f"{meta_file}: an ensemble needs at least one network")
    if not isinstance(variants, list) or not variants:
        raise BundleError(f"{meta_file}: an ensemble needs at least one variant")
    for variant in variants:
        if not isinstance(variant, dict) or set(variant) != {"scale", "gamma"}:
            raise BundleError(f"{meta_file}: a variant is {{'scale', 'gamma'}}, got {variant}")
    dirs, grids = [], set()
    for entry in networks:
        if not isinstance(entry, dict) or not {"path", "sha256"} <= set(entry):
            raise BundleError(f"{meta_file}: a network is {{'path': ..., 'sha256': ...}}")
        network = (path / entry["path"]).resolve()
        if is_ensemble(network):
            raise BundleError(f"{meta_file}: network {entry['path']} is itself an ensemble")
        inner = bundle_metadata(network)  # its own files, metadata and sha256 are consistent
        if inner["sha256"] != entry["sha256"]:
            raise BundleError(
                f"{meta_file}: network {entry['path']} has weights {inner['sha256'][:12]}..., "
                f"the ensemble pins {str(entry['sha256'])[:12]}...; it was replaced"
            )
        dirs.append(network)
        grids.add(tuple(inner["input"]["size"]))
    if len(grids) > 1:
        raise BundleError(f"{meta_file}: the networks' input grids differ ({sorted(grids)})")
    return EnsembleBundle(
        path=path,
        metadata=metadata,
        networks=tuple(dirs),
        variants=tuple({"scale": float(v["scale"]), "gamma": float(v["gamma"])} for v in variants),
    )


def check_ensemble(directory: Path | str) -> str:
    """Read an ensemble and load every network completely (weights into the architecture).

    Returns:
        The ensemble's model id.

    Raises:
        BundleError: as :func:`read_ensemble` and :func:`echo_batch.model.bundle.check_bundle`.
    """
    ensemble = read_ensemble(directory)
    for network in ensemble.networks:
        check_bundle(network)
    return ensemble.model_id


def save_ensemble(
    directory: Path,
    name: str,
    networks: Sequence[Path],
    variants: Sequence[dict[str, float]],
    **fields: Any,
) -> EnsembleBundle:
    """Write an ensemble bundle that references ``networks`` (relative to ``directory``).

    Args:
        directory: the ensemble's directory (created).
        name: the ensemble's name (first part of its model id).
        networks: directories of ordinary bundles.
        variants: ``{"scale": s, "gamma": g}`` per test-time variant.
        **fields: further metadata (e.g. how the members were selected).

    Returns:
        The written ensemble, read back and verified.
    """
    directory.mkdir(parents=True, exist_ok=True)
    entries = []
    for network in networks:
        if is_ensemble(network):
            raise BundleError(f"{network}: an ensemble cannot be a network of an ensemble")
        meta = bundle_metadata(network)  # its files exist and its weights match its metadata
        relative = os.path.relpath(Path(network).resolve(), directory.resolve())
        entries.append({"path": Path(relative).as_posix(), "sha256": meta["sha256"]})
    metadata = {
        "name": name,
        "format": FORMAT,
        "networks": entries,
        "variants": [{"scale": float(v["scale"]), "gamma": float(v["gamma"])} for v in variants],
        **fields,
    }
    write_json_atomic(directory / METADATA_FILE, metadata)
    return read_ensemble(directory)


def model_id_of(directory: Path | str | None) -> str:
    """Model id of an ensemble or an ordinary bundle (None: the default bundle), without torch."""
    if is_ensemble(directory):
        return read_ensemble(directory).model_id  # type: ignore[arg-type]
    return bundle_model_id(directory)


def check_model_dir(directory: Path | str | None) -> str:
    """Load an ensemble's networks or an ordinary bundle completely; returns the model id."""
    if is_ensemble(directory):
        return check_ensemble(directory)  # type: ignore[arg-type]
    return check_bundle(directory)
