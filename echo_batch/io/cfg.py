"""CAMUS ``Info_{2CH,4CH}.cfg`` files (``Key: value`` lines) of the 2019 and 2023 releases."""

from __future__ import annotations

import math
from pathlib import Path

from echo_batch.domain import CfgInfo
from echo_batch.errors import CfgError
from echo_batch.io.limits import DEFAULT_LIMITS, InputLimits

_INT_KEYS = {"ED": "ed_frame", "ES": "es_frame", "NbFrame": "n_frames"}
_FLOAT_KEYS = {
    "Age": "age",
    "EF": "ef_pct",
    "LVef": "ef_pct",
    "LVedv": "edv_ml",
    "LVesv": "esv_ml",
    "FrameRate": "frame_rate_hz",
}
_STR_KEYS = {"Sex": "sex", "ImageQuality": "image_quality"}


def parse_cfg(
    path: Path | str, *, patient_dir: Path | None = None, limits: InputLimits = DEFAULT_LIMITS
) -> CfgInfo:
    """Parse a CAMUS ``Info_{2CH,4CH}.cfg`` file of either release.

    2019 files carry ``LVedv``, ``LVesv`` and ``LVef``; 2023 files carry ``EF`` and ``FrameRate``.
    Lines are ``Key: value``; unknown keys are kept in ``extra``.

    Args:
        path: cfg file.
        patient_dir: folder the file must resolve inside (default: the file's own folder), so
            that a symbolic link cannot make it read anything else.
        limits: ``max_header_bytes`` bounds the file size.

    Returns:
        CfgInfo with typed fields.

    Raises:
        CfgError: the file is missing, not a regular file, outside its folder, not text, has a
            line without ``:``, a value of the wrong type, or inconsistent frame indices.
    """
    path = Path(path)
    try:
        if not path.resolve().is_relative_to((patient_dir or path.parent).resolve()):
            raise CfgError(path, "file resolves outside the patient folder")
        if not path.is_file():  # a FIFO would block the reader forever
            what = "no such file" if not path.exists() else "not a regular file"
            raise CfgError(path, f"cannot read ({what})")
        if path.stat().st_size > limits.max_header_bytes:
            raise CfgError(path, "file is too large to be a cfg file")
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise CfgError(path, "not a text file") from None
    except OSError as exc:
        raise CfgError(path, f"cannot read ({exc.strerror or exc})") from None
    except RuntimeError as exc:  # pathlib's "Symlink loop from ..."
        raise CfgError(path, f"cannot be resolved ({exc})") from None
    values: dict[str, object] = {}
    extra: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, raw = line.partition(":")
        key, raw = key.strip(), raw.strip()
        if not sep or not key:
            raise CfgError(path, f"line {number} is not 'Key: value': {line[:60]!r}")
        try:
            if key in _INT_KEYS:
                values[_INT_KEYS[key]] = int(raw)
            elif key in _FLOAT_KEYS:
                number_value = float(raw)
                if not math.isfinite(number_value):
                    raise ValueError(raw)
                values[_FLOAT_KEYS[key]] = number_value
            elif key in _STR_KEYS:
                values[_STR_KEYS[key]] = raw
            else:
                extra[key] = raw
        except ValueError:
            raise CfgError(path, f"key {key} has a bad value {raw[:40]!r}") from None
    info = CfgInfo(**values, extra=extra)  # type: ignore[arg-type]
    n = info.n_frames
    for name, frame in (("ED", info.ed_frame), ("ES", info.es_frame)):
        if frame is not None and (frame < 1 or (n is not None and frame > n)):
            raise CfgError(path, f"{name} frame {frame} is outside 1..{n}")
    return info
