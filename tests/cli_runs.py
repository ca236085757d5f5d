"""Run the real ``echo-batch`` CLI in a child process, optionally without permission bypass.

Used by the reliability, fault and security tests. The child is ``python -c CODE ARGS``: CODE may
first patch something (a fault to inject), then calls :func:`echo_batch.cli.main` with ARGS.

Unprivileged runs: as a normal user, mode-000 files are unreadable anyway. As root (CI runs as
root), the child drops ``CAP_DAC_OVERRIDE`` and ``CAP_DAC_READ_SEARCH`` from its capability
bounding set and re-executes itself, so that it and every process it starts (Prefect API, Dask
workers) obey permission bits like a normal user while keeping access to root-owned files.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]

_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2

_DROP_AND_REEXEC = f"""
import ctypes, os, sys
if os.environ.pop("ECHO_TEST_UNPRIVILEGED", None) == "1" and os.geteuid() == 0:
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in ({_CAP_DAC_OVERRIDE}, {_CAP_DAC_READ_SEARCH}):
        if libc.prctl({_PR_CAPBSET_DROP}, cap, 0, 0, 0) != 0:
            raise SystemExit("cannot drop capability %d (errno %d)" % (cap, ctypes.get_errno()))
    os.execv(sys.executable, [sys.executable, "-c", CODE, *sys.argv[1:]])
"""
_RUN_CLI = """
import sys
from echo_batch.cli import main
sys.argv = ["echo-batch", *sys.argv[1:]]
main()
"""


def cli_code(prelude: str = "") -> str:
    """Source of the child: optional privilege drop, ``prelude`` (e.g. a patch), then the CLI."""
    body = prelude + "\n" + _RUN_CLI
    return f"CODE = {body!r}\n" + _DROP_AND_REEXEC + "\nexec(CODE)\n"


def cli_env(api_url: str | None = None, **extra: str) -> dict[str, str]:
    """Environment of a CLI child.

    Args:
        api_url: Prefect API to use (None: the CLI starts its own temporary one).
        extra: more variables.

    Returns:
        The parent's environment without Prefect settings, plus ``COLUMNS`` (Rich wraps log lines
        at 80 columns when stderr is not a terminal; a wide console keeps one line per message).
    """
    # the CLI itself turns the embedded API's analytics off: the tests see what a user sees
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PREFECT_API") and k != "PREFECT_SERVER_ANALYTICS_ENABLED"
    }
    env.update(COLUMNS="400", PYTHONUNBUFFERED="1")
    if api_url:
        env["PREFECT_API_URL"] = api_url
    env.update(extra)
    return env


def start_cli(
    args: Iterable[str],
    *,
    env: Mapping[str, str],
    prelude: str = "",
    unprivileged: bool = False,
    cwd: Path | None = None,
) -> subprocess.Popen:
    """Start ``echo-batch ARGS`` in a child process.

    stdout and stderr go to temporary files (a pipe nobody reads could block the child while a
    test waits for something); :func:`outputs` reads them.
    """
    env = dict(env)
    if unprivileged:
        env["ECHO_TEST_UNPRIVILEGED"] = "1"
    # closed with the Popen object's last reference (the tests read them through ``outputs``)
    stdout = tempfile.TemporaryFile("w+")  # noqa: SIM115
    stderr = tempfile.TemporaryFile("w+")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-c", cli_code(prelude), *map(str, args)],
        env=env,
        cwd=cwd or REPO,
        stdout=stdout,
        stderr=stderr,
        text=True,
    )
    proc.captured = (stdout, stderr)  # type: ignore[attr-defined]
    return proc


def outputs(proc: subprocess.Popen) -> tuple[str, str]:
    """``(stdout, stderr)`` written so far by a child of :func:`start_cli`."""
    texts = []
    for fh in proc.captured:  # type: ignore[attr-defined]
        fh.seek(0)
        texts.append(fh.read())
    return texts[0], texts[1]


def finish(proc: subprocess.Popen, timeout: float = 300) -> subprocess.CompletedProcess:
    """Wait for a child of :func:`start_cli`; kill it and fail after ``timeout`` seconds."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        raise AssertionError(
            f"echo-batch did not finish in {timeout} s:\n{outputs(proc)[1][-5000:]}"
        ) from None
    out, err = outputs(proc)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def run_cli(args: Iterable[str], *, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """Run ``echo-batch ARGS`` to completion (see :func:`start_cli` for the options)."""
    return finish(start_cli(args, **kwargs), timeout)


def kill_tree(proc: subprocess.Popen) -> list[int]:
    """SIGKILL a child and every process it started; returns the pids killed.

    Descendants are collected before the kill, since orphans are re-parented.
    """
    try:
        parent = psutil.Process(proc.pid)
        family = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    killed = []
    for member in family:
        try:
            member.kill()
            killed.append(member.pid)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(family[1:], timeout=10)
    proc.wait(timeout=10)
    return killed


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    """Poll ``predicate`` every 50 ms; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"echo-batch ended before {what}:\n{outputs(proc)[1][-5000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


@functools.cache
def permissions_enforceable() -> bool:
    """True when an unprivileged child cannot read a mode-000 file (see the module docstring)."""
    with tempfile.TemporaryDirectory() as tmp:
        locked = Path(tmp) / "locked"
        locked.write_text("x")
        locked.chmod(0)
        prelude = (
            "import sys\ntry:\n    open(sys.argv[1]).read()\nexcept PermissionError:\n"
            "    raise SystemExit(0)\nraise SystemExit(1)\n"
        )
        env = dict(os.environ, ECHO_TEST_UNPRIVILEGED="1")
        code = f"CODE = {prelude!r}\n" + _DROP_AND_REEXEC + "\nexec(CODE)\n"
        result = subprocess.run(
            [sys.executable, "-c", code, os.fspath(locked)], env=env, capture_output=True
        )
        return result.returncode == 0
