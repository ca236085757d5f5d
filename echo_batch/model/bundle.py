"""Model bundle: ``model.pt`` (state dict) and ``metadata.json`` in one directory.

Weights are loaded with ``weights_only=True`` and their sha256 is checked against the metadata
before loading, so a bundle cannot execute code or be swapped silently. The file is read once;
the bytes that were hashed are the bytes that are loaded.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from echo_batch import atomic
from echo_batch.errors import EchoBatchError

if TYPE_CHECKING:  # torch is imported where weights are read or written, not to read an id
    import torch

    from echo_batch.model.unet import UNet, UNetConfig

WEIGHTS_FILE = "model.pt"
METADATA_FILE = "metadata.json"
DEFAULT_BUNDLE = Path(__file__).resolve().parent.parent / "bundles" / "camus224-unet-slim"
UNCERTAINTY_BUNDLE = DEFAULT_BUNDLE.parent / "camus224-unet-tta"
"""What ``--uncertainty`` runs when no ``--model`` is given: an ensemble bundle, the first network
on five test-time variants (chosen on the validation split; docs/model.md, "Uncertainty")."""


class BundleError(EchoBatchError):
    """A model bundle is missing, inconsistent or tampered with."""


@dataclass(frozen=True)
class Bundle:
    """A loaded bundle.

    Attributes:
        path: bundle directory.
        metadata: parsed ``metadata.json``.
        state_dict: verified weights.
    """

    path: Path
    metadata: dict[str, Any]
    state_dict: dict[str, torch.Tensor]

    @property
    def config(self) -> UNetConfig:
        """Architecture parameters."""
        from echo_batch.model.unet import UNetConfig

        return UNetConfig.from_dict(self.metadata["architecture"]["params"])

    @property
    def input_size(self) -> tuple[int, int]:
        """``(rows, cols)`` of the network input."""
        rows, cols = self.metadata["input"]["size"]
        return int(rows), int(cols)

    @property
    def model_id(self) -> str:
        """Bundle name plus the first 12 hex digits of the weights' sha256."""
        return f"{self.metadata['name']}@{self.metadata['sha256'][:12]}"

    def build(self) -> UNet:
        """A UNet in eval mode with the bundle's weights."""
        from echo_batch.model.unet import UNet

        model = UNet(self.config)
        model.load_state_dict(self.state_dict)
        return model.eval()


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically and durably (:func:`echo_batch.atomic.write_text`)."""
    atomic.write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def save_bundle(
    directory: Path, state_dict: dict[str, torch.Tensor], metadata: dict[str, Any]
) -> Path:
    """Write weights and metadata; the metadata gets the weights' sha256.

    Args:
        directory: bundle directory (created).
        state_dict: model weights.
        metadata: everything but ``sha256``.

    Returns:
        The bundle directory.
    """
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / WEIGHTS_FILE
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    atomic.write_file(weights, functools.partial(torch.save, tensors))
    write_json_atomic(directory / METADATA_FILE, {**metadata, "sha256": sha256_file(weights)})
    return directory


def update_metadata(directory: Path, **fields: Any) -> dict[str, Any]:
    """Merge fields into ``metadata.json`` (the sha256 stays that of the weights)."""
    path = directory / METADATA_FILE
    metadata = json.loads(path.read_text(encoding="utf-8"))
    metadata.update(fields)
    write_json_atomic(path, metadata)
    return metadata


def _verified(directory: Path | str | None) -> tuple[Path, dict[str, Any], bytes]:
    """Read a bundle's metadata and weight bytes and check the sha256 (no torch needed).

    Returns:
        ``(path, metadata, weight bytes)``.

    Raises:
        BundleError: files missing, metadata unreadable, or sha256 mismatch.
    """
    path = Path(directory) if directory is not None else DEFAULT_BUNDLE
    weights, meta_path = path / WEIGHTS_FILE, path / METADATA_FILE
    if not weights.is_file() or not meta_path.is_file():
        if meta_path.is_file() and _format_of(meta_path) == "ensemble":
            raise BundleError(
                f"{path}: an ensemble bundle (several networks), not one network; "
                "it is read with echo_batch.model.ensemble_bundle"
            )
        raise BundleError(f"{path}: not a model bundle (needs {WEIGHTS_FILE} and {METADATA_FILE})")
    try:
        metadata = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BundleError(f"{meta_path}: unreadable metadata ({exc})") from None
    expected = metadata.get("sha256")
    try:
        data = weights.read_bytes()  # hashed and loaded from the same bytes: no swap in between
    except OSError as exc:
        raise BundleError(f"{weights}: cannot read weights ({exc})") from None
    actual = hashlib.sha256(data).hexdigest()
    if expected != actual:
        raise BundleError(
            f"{weights}: sha256 {actual[:12]}... does not match metadata "
            f"({str(expected)[:12]}...); the weights were changed or corrupted"
        )
    return path, metadata, data


def _format_of(meta_path: Path) -> str | None:
    """The ``format`` field of a metadata file (None when absent or unreadable)."""
    try:
        metadata = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return metadata.get("format") if isinstance(metadata, dict) else None


def bundle_metadata(directory: Path | str | None = None) -> dict[str, Any]:
    """Metadata of a verified bundle (files present, sha256 matching) without torch."""
    return _verified(directory)[1]


def bundle_model_id(directory: Path | str | None = None) -> str:
    """Id of a verified bundle (name and weight hash) without loading the weights or torch."""
    metadata = bundle_metadata(directory)
    return f"{metadata['name']}@{metadata['sha256'][:12]}"


def load_bundle(directory: Path | str | None = None) -> Bundle:
    """Load and verify a bundle.

    Args:
        directory: bundle directory; the default bundle shipped with the package when None.

    Returns:
        The verified Bundle.

    Raises:
        BundleError: files missing, metadata unreadable, or sha256 mismatch.
    """
    import torch

    path, metadata, data = _verified(directory)
    weights = path / WEIGHTS_FILE
    try:
        state_dict = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for bad files
        raise BundleError(f"{weights}: cannot load weights: {_load_failure(exc)}") from None
    return Bundle(path=path, metadata=metadata, state_dict=state_dict)


def _load_failure(exc: BaseException) -> str:
    """One line saying why torch could not load the weights, without torch's advice.

    A safe load (``weights_only=True``) refuses a file that pickles Python objects; torch's
    message then suggests loading with ``weights_only=False``, which would run that file's code.
    """
    import pickle

    if isinstance(exc, pickle.UnpicklingError):
        return (
            "not a plain state dict of tensors (it holds Python objects, which a safe load "
            "refuses; re-export the bundle with save_bundle)"
        )
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{type(exc).__name__}: {first[:200]}"


def check_bundle(directory: Path | str | None = None) -> str:
    """Load a bundle completely: metadata, sha256, weights, and the weights into the network.

    Args:
        directory: bundle directory; the default bundle when None.

    Returns:
        The bundle's model id.

    Raises:
        BundleError: one line naming the file and the reason, for any failure.
    """
    import torch

    bundle = load_bundle(directory)
    weights = bundle.path / WEIGHTS_FILE
    state_dict = bundle.state_dict
    if not isinstance(state_dict, dict) or not all(
        isinstance(v, torch.Tensor) for v in state_dict.values()
    ):
        raise BundleError(f"{weights}: not a state dict (a mapping of names to tensors)")
    try:
        bundle.build()
    except Exception as exc:  # wrong architecture parameters, missing or extra keys
        raise BundleError(
            f"{weights}: weights do not fit the architecture in {METADATA_FILE}: "
            f"{_load_failure(exc)}"
        ) from None
    return bundle.model_id
