"""Nothing is left behind by a killed run (issue 18): ``echo-batch run`` is SIGKILLed during
start-up, mid-run and during compaction; 15 s later no process it started is alive (the Prefect
API server, the Dask workers, multiprocessing's resource tracker), and a resumed run completes
with every patient exactly once.

Every process of a run is found by a marker in its environment (inherited by every child, and
kept when an orphan is re-parented to init), not by walking the tree, which loses orphans. The
killed runs start their own Prefect API (no ``PREFECT_API_URL``), as a user's run does; the
resumed runs use one test API for the module.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import pandas as pd
import psutil
import pytest
from cli_runs import cli_env, kill_tree, outputs, run_cli, start_cli, wait_for

from echo_batch.store.files import PARTS_DIR
from echo_batch.synth import synth_cohort

pytestmark = pytest.mark.slow

N_PATIENTS = 12
MARKER = "ECHO_BATCH_TEST_RUN"
LEFT_WITHIN_S = 15.0

HANG_IN_CHUNK = """
import os, time
from pathlib import Path
import flows.cohort_ef
from echo_batch.run.chunk import process_chunk as _process_chunk

def process_chunk(refs, options, model_id=None):
    if os.environ["HANG_PATIENT"] in {r.patient_id for r in refs}:
        Path(os.environ["HANG_MARKER"]).write_text(str(os.getpid()))
        time.sleep(600)
    return _process_chunk(refs, options, model_id)

flows.cohort_ef.process_chunk = process_chunk
"""
HANG_IN_COMPACTION = """
import os, time
from pathlib import Path
from echo_batch.store import compaction

_read = compaction._Buckets.read

def read(self, number):  # the rows are in the buckets, a result file is half written
    Path(os.environ["HANG_MARKER"]).write_text(str(os.getpid()))
    time.sleep(600)
    return _read(self, number)

compaction._Buckets.read = read
"""


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return synth_cohort(tmp_path_factory.mktemp("kill") / "data", N_PATIENTS, seed=9, max_side=64)


def run_processes(token: str) -> list[psutil.Process]:
    """Live processes whose environment carries the run's marker (orphans included)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(MARKER) == token and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def describe(procs: list[psutil.Process]) -> list[str]:
    lines = []
    for proc in procs:
        try:
            lines.append(f"{proc.pid} (parent {proc.ppid()}): {' '.join(proc.cmdline())[:160]}")
        except psutil.Error:
            continue
    return lines


def is_api_server(proc: psutil.Process) -> bool:
    try:
        command = " ".join(proc.cmdline())
    except psutil.Error:
        return False
    return "prefect_api" in command or "uvicorn" in command


def is_worker(proc: psutil.Process) -> bool:
    try:
        return "spawn_main" in " ".join(proc.cmdline())
    except psutil.Error:
        return False


def kill_and_check(proc, token: str) -> list[str]:
    """SIGKILL the run's own process only; wait until its processes are gone, at most 15 s.

    Returns:
        What its processes were just before the kill.
    """
    before = describe(run_processes(token))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    deadline = time.monotonic() + LEFT_WITHIN_S
    while (left := run_processes(token)) and time.monotonic() < deadline:
        time.sleep(0.25)
    for orphan in left:  # leave the machine clean even when the test fails
        orphan.kill()
    assert not left, f"left {LEFT_WITHIN_S:g} s after SIGKILL: {describe(left)}; before: {before}"
    return before


def start_run(cohort: Path, out: Path, tmp_path: Path, prelude: str = ""):
    token = uuid.uuid4().hex
    env = cli_env(
        None,  # the run starts its own Prefect API, as a user's does
        **{MARKER: token},
        HANG_MARKER=os.fspath(tmp_path / "hang"),
        HANG_PATIENT=f"patient{N_PATIENTS:04d}",
    )
    args = ["run", cohort, "--out", out, "--segmentation", "gt", "--chunk-size", "2"]
    return start_cli([*args, "--workers", "2"], env=env, prelude=prelude), token


def resume_and_check(cohort: Path, out: Path, api_url: str) -> None:
    """A resumed run completes: every patient once, all ok, nothing left in OUT."""
    result = run_cli(["run", cohort, "--out", out, "--segmentation", "gt"], env=cli_env(api_url))
    assert result.returncode == 0, result.stderr[-5000:]
    patients = pd.read_parquet(out / "patients.parquet")
    images = pd.read_parquet(out / "images.parquet")
    expected = [f"patient{k:04d}" for k in range(1, N_PATIENTS + 1)]
    assert list(patients.patient_id) == expected  # each once, in order
    assert (patients.status == "ok").all()
    assert len(images) == 4 * N_PATIENTS
    assert not images.duplicated(["patient_id", "view", "instant"]).any()
    assert not (out / PARTS_DIR).exists()
    assert not [p.name for p in out.rglob(".*") if ".tmp-" in p.name]


def test_killed_during_start_up(cohort, api_url, tmp_path):
    out = tmp_path / "out"
    proc, token = start_run(cohort, out, tmp_path)
    try:
        wait_for(
            lambda: (
                any(map(is_api_server, run_processes(token)))
                and any(map(is_worker, run_processes(token)))
            ),
            120,
            "the Prefect API and a Dask worker to start",
            proc,
        )
        assert not (out / PARTS_DIR).exists(), "start-up is over already"
        before = kill_and_check(proc, token)
    finally:
        if proc.poll() is None:
            kill_tree(proc)
    assert len(before) >= 3, before  # the run, its API server, a worker at least
    resume_and_check(cohort, out, api_url)


def test_killed_mid_run(cohort, api_url, tmp_path):
    out = tmp_path / "out"
    proc, token = start_run(cohort, out, tmp_path, prelude=HANG_IN_CHUNK)
    parts = out / PARTS_DIR
    try:
        wait_for((tmp_path / "hang").exists, 180, "the last chunk to hang", proc)
        wait_for(lambda: len(list(parts.glob("*.patients.parquet"))) >= 2, 120, "2 parts", proc)
        before = kill_and_check(proc, token)
    finally:
        if proc.poll() is None:
            kill_tree(proc)
    assert sum("spawn_main" in line for line in before) == 2, before
    assert any("prefect_api" in line for line in before), before
    resume_and_check(cohort, out, api_url)


def test_killed_during_compaction(cohort, api_url, tmp_path):
    out = tmp_path / "out"
    proc, token = start_run(cohort, out, tmp_path, prelude=HANG_IN_COMPACTION)
    try:
        wait_for((tmp_path / "hang").exists, 240, "the compaction to hang", proc)
        half_written = [p.name for p in out.glob(".*.tmp-*")]
        before = kill_and_check(proc, token)
    finally:
        if proc.poll() is None:
            kill_tree(proc)
    assert any(name.startswith(".images.parquet.tmp-") for name in half_written), half_written
    assert any(name.startswith(".stage.tmp-") for name in half_written), half_written
    assert any("prefect_api" in line for line in before), (before, outputs(proc)[1][-3000:])
    resume_and_check(cohort, out, api_url)
