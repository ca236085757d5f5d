"""The run lock of ``OUT``: one run at a time writes parts, compacts and cleans up.

The lock is a kernel lock (``flock``) on ``OUT/.echo-batch.lock``, taken with :mod:`filelock`.
That is enough: the kernel drops the lock when its process ends, however it ends (SIGKILL, a
power loss of the node), so there is no stale lock to detect or break, and no pid to trust. The
lock file itself stays in place between runs (an empty file; ``filelock`` keeps it so that every
contender locks the same inode); holding the lock, not the file's existence, is what counts.

What a lock cannot say is who holds it; the holder writes that (pid, host, start, run id) to
``OUT/.echo-batch.lock.json`` after taking the lock and removes it before releasing, and a
refused run names it in its error. A holder file found when the lock is free was left by a run
that ended without releasing (killed): it is reported and replaced.

``filelock`` follows a symbolic link at the lock path; a link or anything that is not a regular
file with a single name is refused before the lock is taken, so that a link planted in ``OUT``
cannot make the run create or lock a file elsewhere.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import filelock

from echo_batch import atomic
from echo_batch.errors import EchoBatchError
from echo_batch.store.files import LOCK_FILE, LOCK_HOLDER_FILE

logger = logging.getLogger(__name__)

_HOLDER_MAX_BYTES = 4096


class OutputLockedError(EchoBatchError):
    """``OUT`` is locked by another run (or by this store already).

    Args:
        out: the locked output folder.
        holder: what the holder wrote about itself (pid, host, started, run_id); may be empty.
        reason: why the lock cannot be taken, in words a user can act on.
    """

    def __init__(self, out: Path, holder: dict[str, Any], reason: str) -> None:
        self.out = out
        self.holder = holder
        self.reason = reason
        if holder:
            who = (
                f"run {holder.get('run_id')}, pid {holder.get('pid')} on host "
                f"{holder.get('host')}, started {holder.get('started')}"
            )
        else:
            who = "holder unknown: it has not recorded itself yet"
        super().__init__(f"{out}: {reason} ({who}; lock file {out / LOCK_FILE})")


class OutputLock:
    """Exclusive, non-blocking hold on ``OUT`` for one run.

    Args:
        out: output folder; it must exist when :meth:`acquire` is called.
        run_id: id of the run taking the lock, recorded for the error of a refused run.
    """

    def __init__(self, out: Path, run_id: str) -> None:
        self.out = Path(out)
        self.path = self.out / LOCK_FILE
        self.holder_path = self.out / LOCK_HOLDER_FILE
        self.run_id = run_id
        self._lock: filelock.FileLock | None = None

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._lock is not None

    def acquire(self) -> None:
        """Take the lock at once or fail (a second run never waits for the first).

        Raises:
            OutputLockedError: another run (or this object) holds the lock.
            EchoBatchError: the lock path is a link or not a regular file, or ``OUT`` is not
                writable.
        """
        if self.held:
            raise OutputLockedError(self.out, read_holder(self.holder_path), "already locked")
        self._check_path()
        lock = filelock.FileLock(self.path, timeout=0, thread_local=False)
        try:
            lock.acquire()
        except filelock.Timeout:
            holder = read_holder(self.holder_path)
            raise OutputLockedError(self.out, holder, "another run is using this folder") from None
        except OSError as exc:
            raise EchoBatchError(f"cannot write to OUT {self.out}: {exc}") from exc
        try:
            self._check_path()  # what was locked is still what was checked
            self._record_holder()
        except BaseException:
            lock.release()
            raise
        self._lock = lock
        logger.debug("%s: locked by run %s", self.out, self.run_id)

    def release(self) -> None:
        """Remove the holder record and release the lock; nothing when not held."""
        if self._lock is None:
            return
        lock, self._lock = self._lock, None
        try:
            self.holder_path.unlink(missing_ok=True)
        except OSError as exc:
            logger.warning("%s: cannot remove %s: %s", self.out, self.holder_path, exc)
        finally:
            lock.release()

    def _check_path(self) -> None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise EchoBatchError(f"cannot write to OUT {self.out}: {exc}") from exc
        if stat.S_ISLNK(st.st_mode):
            problem = "is a symbolic link"
        elif not stat.S_ISREG(st.st_mode):
            problem = "is not a regular file"
        elif st.st_nlink != 1:
            problem = f"has {st.st_nlink} hard links"
        else:
            return
        raise EchoBatchError(
            f"{self.path} {problem}; refusing to use or replace it (remove it by hand)"
        )

    def _record_holder(self) -> None:
        previous = read_holder(self.holder_path)
        if previous:
            logger.warning(
                "%s: run %s (pid %s on host %s, started %s) ended without releasing OUT; "
                "taking it over",
                self.out,
                previous.get("run_id"),
                previous.get("pid"),
                previous.get("host"),
                previous.get("started"),
            )
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "run_id": self.run_id,
        }
        try:
            atomic.write_text(self.holder_path, json.dumps(holder) + "\n")
        except OSError as exc:
            raise EchoBatchError(f"cannot write to OUT {self.out}: {exc}") from exc


def read_holder(path: Path) -> dict[str, Any]:
    """What a holder recorded about itself; empty when the record is absent or unreadable.

    The record is read without following a link and only its first 4 KiB.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return {}
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return {}
        holder = json.loads(os.read(fd, _HOLDER_MAX_BYTES))
    except (OSError, ValueError):
        return {}
    finally:
        os.close(fd)
    return holder if isinstance(holder, dict) else {}
