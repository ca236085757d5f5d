"""Atomic, durable file replacement: the one "write a temporary file, then rename" of echo-batch.

Every file echo-batch writes (Parquet parts and results, ``run.json``, reports, cfg and image
files, model bundles, checkpoints) goes through this module, so that:

- a reader never sees a half-written file: the content goes to a hidden temporary name in the
  target's own folder (same file system) and is renamed over the target in one step;
- a power loss never leaves an empty or truncated file: the temporary file is ``fsync``-ed before
  the rename and the folder after it, so once a function here returns, the new file is on disk
  under its final name (POSIX makes no promise without both; ext4 and XFS can otherwise keep a
  zero-length file after a crash, see the ext4 ``auto_da_alloc`` documentation);
- nothing is written through a symbolic link planted in an output folder: a temporary name is
  created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` (an existing name, link or not, is an error, never
  reused), and ``rename`` replaces a link at the final name instead of following it. Writers that
  can only be given a path (SimpleITK) write into a private folder (:func:`private_stage`,
  ``mkdtemp``: mode 0700, a fresh name) that no one else can have prepared;
- a failure (a full disk, an exception of the writer) leaves the earlier file as it was and no
  temporary file behind.

Temporary names are ``.<name>.tmp-<pid>-<random>``: hidden, recognisable as a leftover of a crashed
process (:func:`temp_owner_pid`), and unpredictable.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "fsync_dir",
    "move_into_place",
    "private_stage",
    "staged_path",
    "temp_name",
    "temp_owner_pid",
    "write_bytes",
    "write_file",
    "write_files",
    "write_text",
]

Writer = Callable[[BinaryIO], object]
"""Writes the whole content of one file to the open binary file it is given."""

_TEMP_RE = re.compile(r"^\..*\.tmp-(?P<pid>\d+)-\w+$")
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def temp_name(path: Path) -> Path:
    """A fresh hidden temporary name beside ``path``: ``.<name>.tmp-<pid>-<8 hex digits>``."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def temp_owner_pid(name: str) -> int | None:
    """Process id in a temporary name made by this module (file or stage folder); None otherwise."""
    match = _TEMP_RE.match(name)
    return None if match is None else int(match["pid"])


def fsync_dir(folder: Path) -> None:
    """Flush ``folder``'s entries (created, renamed or removed names) to disk.

    A file system that cannot flush folders at all (``EINVAL``, some network and FUSE file
    systems) is accepted: there is nothing more to do there.

    Raises:
        OSError: the folder cannot be opened or flushed.
    """
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # EINVAL: a file system that cannot sync folders at all
            raise
    finally:
        os.close(fd)


def _write_temp(path: Path, write: Writer) -> Path:
    """Create a temporary file beside ``path``, fill it with ``write`` and ``fsync`` it.

    Returns:
        The temporary file; nothing is left behind when creating or writing fails.
    """
    tmp = temp_name(path)
    fd = os.open(tmp, _CREATE_FLAGS, 0o666)  # the umask applies, as for any new file
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return tmp


def write_files(items: Sequence[tuple[Path, Writer]]) -> list[Path]:
    """Replace several files: write every one under a temporary name, then rename them in order.

    A failure while writing (a full disk) leaves every existing file as it was; only the renames,
    which need no space, happen after the last byte is on disk. Each folder is ``fsync``-ed once,
    after the last rename.

    Args:
        items: ``(target path, writer)`` pairs, in the order the targets are to appear (a reader
            that finds the last one can rely on the earlier ones).

    Returns:
        The target paths.

    Raises:
        OSError: a file cannot be created, written, flushed or renamed, or a folder flushed.
    """
    written: list[tuple[Path, Path]] = []
    try:
        for path, write in items:
            written.append((_write_temp(path, write), path))
        for tmp, path in written:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in written:
            with contextlib.suppress(OSError):
                tmp.unlink()  # already renamed: gone; otherwise removed
        raise
    for folder in dict.fromkeys(path.parent for path, _ in items):
        fsync_dir(folder)
    return [path for path, _ in items]


def write_file(path: Path, write: Writer) -> Path:
    """Replace ``path`` atomically and durably with what ``write`` writes to a binary file.

    Use it for writers that take an open file (``pyarrow.parquet.write_table``, ``torch.save``).

    Returns:
        ``path``.

    Raises:
        OSError: the file cannot be created, written, flushed or renamed.
    """
    return write_files([(Path(path), write)])[0]


def write_bytes(path: Path, data: bytes) -> Path:
    """Replace ``path`` atomically and durably with ``data``."""
    return write_file(path, lambda fh: fh.write(data))


def write_text(path: Path, text: str, encoding: str = "utf-8") -> Path:
    """Replace ``path`` atomically and durably with ``text`` (line ends written as they are)."""
    return write_bytes(path, text.encode(encoding))


@contextlib.contextmanager
def private_stage(folder: Path) -> Iterator[Path]:
    """A private folder inside ``folder`` for writers that can only be given a path.

    SimpleITK and similar writers open by name and follow links; inside this folder (created by
    ``mkdtemp``: mode 0700, a name that did not exist) no one else can have planted one. Move
    the results into place with :func:`move_into_place`; the folder and whatever is left in it
    are removed on exit.

    Yields:
        The stage folder, ``.stage.tmp-<pid>-<random>`` in ``folder`` (same file system).
    """
    stage = Path(tempfile.mkdtemp(prefix=f".stage.tmp-{os.getpid()}-", dir=folder))
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def move_into_place(staged: Path, path: Path) -> Path:
    """Rename a finished file written in a :func:`private_stage` over ``path``, durably.

    The staged file is ``fsync``-ed before the rename, ``path``'s folder after it.

    Returns:
        ``path``.
    """
    fd = os.open(staged, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(staged, path)
    fsync_dir(path.parent)
    return path


@contextlib.contextmanager
def staged_path(path: Path) -> Iterator[Path]:
    """A path for a writer that needs one; on a clean exit the file is moved over ``path``.

    Example::

        with staged_path(out / "x.nii.gz") as tmp:
            sitk.WriteImage(image, str(tmp))

    Yields:
        A path with ``path``'s name inside a fresh private folder beside ``path``. When the block
        raises, nothing is moved and the earlier ``path`` stays as it was.
    """
    path = Path(path)
    with private_stage(path.parent) as stage:
        staged = stage / path.name
        yield staged
        move_into_place(staged, path)
