"""The Prefect flow on Dask: same results as the serial run, resume, masks, external scheduler."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from echo_batch.domain import SegmentationSource
from echo_batch.io.image import read_image
from echo_batch.run.options import ChunkOptions, RunOptions
from echo_batch.run.serial import run_cohort
from echo_batch.synth import synth_cohort

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("api_url")]
SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "camus224-test"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return synth_cohort(tmp_path_factory.mktemp("syn") / "c", 5, seed=3, fmt="nifti", max_side=128)


@pytest.fixture(scope="module")
def serial(cohort, tmp_path_factory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("serial")
    run_cohort(
        RunOptions(cohort, out, ChunkOptions(segmentation=SegmentationSource.GT), chunk_size=2)
    )
    return pd.read_parquet(out / "patients.parquet"), pd.read_parquet(out / "images.parquet")


_CHUNK_FIELDS = {f.name for f in dataclasses.fields(ChunkOptions)}


def _flow(progress=None, **kwargs):
    """Run the flow with ``RunOptions`` built from flat keywords (gt, 2 patients per chunk)."""
    from flows.cohort_ef import cohort_ef

    chunk = {"segmentation": "gt", **{k: kwargs.pop(k) for k in list(kwargs) if k in _CHUNK_FIELDS}}
    if chunk.get("model") is not None:
        chunk["model"] = Path(chunk["model"])
    options = RunOptions(**{"chunk": ChunkOptions(**chunk), "chunk_size": 2, **kwargs})
    return cohort_ef(options, progress=progress)


def _assert_same(out: Path, serial) -> None:
    patients, images = serial
    pd.testing.assert_frame_equal(pd.read_parquet(out / "patients.parquet"), patients)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "images.parquet"), images)


@pytest.mark.parametrize("workers", [1, 2])
def test_local_cluster_equals_serial(cohort, serial, tmp_path, workers):
    record = _flow(data=str(cohort), out=str(tmp_path), workers=workers)
    _assert_same(tmp_path, serial)
    assert record["summary"]["status"] == {"ok": 5}
    assert record["processed"] == 5
    assert not list((tmp_path / "parts").glob("*.parquet"))


def test_resume_processes_only_new_and_failed_patients(cohort, serial, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(cohort, data)
    nifti = data / "database_nifti"
    held_back = nifti / "patient0005"
    shutil.move(held_back, tmp_path / "later")
    bad = nifti / "patient0002" / "patient0002_4CH_ES_gt.nii.gz"
    good_bytes = bad.read_bytes()
    bad.write_bytes(b"garbage")
    out = tmp_path / "out"
    first = _flow(data=str(data), out=str(out), workers=1)
    assert first["processed"] == 4
    assert first["summary"]["status"] == {"ok": 3, "partial": 1}
    bad.write_bytes(good_bytes)  # fixed in the meantime, and a new patient arrives
    shutil.move(tmp_path / "later", held_back)
    second = _flow(data=str(data), out=str(out), workers=1)
    assert second["processed"] == 2  # the partial one is retried, the new one processed
    assert second["skipped_done"] == 3
    _assert_same(out, serial)


def test_model_run_saves_masks_with_input_geometry(tmp_path):
    data = tmp_path / "data"
    for pid in ("patient0027", "patient0047"):
        shutil.copytree(SAMPLE / "database_nifti" / pid, data / pid)
    out = tmp_path / "out"
    record = _flow(data=str(data), out=str(out), workers=1, segmentation="model", save_masks=True)
    assert record["summary"]["status"] == {"ok": 2}
    pred = read_image(out / "masks" / "patient0027" / "patient0027_2CH_ED_pred.nii.gz", labels=True)
    src = read_image(data / "patient0027" / "patient0027_2CH_ED.nii.gz")
    assert pred.array.shape == src.array.shape
    assert pred.spacing == pytest.approx(src.spacing)
    assert set(pred.array.ravel()) <= {0, 1, 2, 3} and (pred.array == 1).sum() > 500


def test_external_scheduler_with_two_workers(cohort, serial, tmp_path):
    bin_dir = Path(sys.executable).parent
    scheduler_file = tmp_path / "scheduler.json"
    procs = [
        subprocess.Popen(
            [
                bin_dir / "dask",
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                scheduler_file,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert scheduler_file.exists(), "dask scheduler did not start"
        for _ in range(2):
            procs.append(
                subprocess.Popen(
                    [
                        bin_dir / "dask",
                        "worker",
                        "--scheduler-file",
                        scheduler_file,
                        "--nworkers",
                        "1",
                        "--nthreads",
                        "1",
                        "--no-dashboard",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        import json

        from distributed import Client

        address = json.loads(scheduler_file.read_text())["address"]
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
        record = _flow(data=str(cohort), out=str(tmp_path / "out"), dask_address=address)
        assert record["config"]["executor"] == f"dask:{address}"
        _assert_same(tmp_path / "out", serial)
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _processes_with_marker(marker: str) -> list[str]:
    """Command lines of live processes whose environment carries ``marker``."""
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if proc.environ().get("ECHO_BATCH_TEST_MARKER") == marker:
                found.append(" ".join(proc.info["cmdline"] or []))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


@pytest.mark.parametrize("fails", [False, True], ids=["succeeds", "fails"])
def test_no_process_outlives_the_run(cohort, tmp_path, fails):
    """The CLI run leaves no Prefect server, Dask scheduler or worker behind, failed or not.

    The failing run asks for a model bundle that does not exist: it fails after the local cluster
    has started (the cluster starts in the background while the run reads its inputs).
    """
    import os
    import uuid

    marker = uuid.uuid4().hex
    cmd = [
        str(Path(sys.executable).parent / "echo-batch"),
        "run",
        str(cohort),
        "--out",
        str(tmp_path / "out"),
        "--workers",
        "2",
    ]
    cmd += ["--model", str(tmp_path / "no-such-bundle")] if fails else ["--segmentation", "gt"]
    env = {**os.environ, "ECHO_BATCH_TEST_MARKER": marker}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert (proc.returncode != 0) == fails, proc.stderr[-2000:]
    if fails:
        assert "no-such-bundle" in proc.stderr
    deadline = time.monotonic() + 10
    while _processes_with_marker(marker) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _processes_with_marker(marker) == []


def test_failed_flow_closes_its_cluster_in_process(cohort, tmp_path):
    """Inside a long-lived process (a Prefect worker), a failed run leaves no Dask children."""
    import psutil

    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    with pytest.raises(RuntimeError, match="no Dask worker advertises a GPU"):
        _flow(
            data=str(cohort),
            out=str(tmp_path / "out"),
            segmentation="model",
            device="cuda",  # fails after the cluster started: no worker advertises a GPU
            workers=2,
        )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        extra = [p for p in me.children(recursive=True) if p.pid not in before and p.is_running()]
        extra = [
            p
            for p in extra
            if p.status() != psutil.STATUS_ZOMBIE
            # one per interpreter, started by multiprocessing on first use; not the run's
            and "multiprocessing.resource_tracker" not in " ".join(p.cmdline())
        ]
        if not extra:
            break
        time.sleep(0.5)
    assert [" ".join(p.cmdline()) for p in extra] == []


def test_local_scheduler_does_not_keep_the_chunks_it_sent():
    """The local scheduler runs in the flow process: chunks it sent must not pile up there.

    Dask logs recent messages (1,000 by default), and each message that sends a chunk holds its
    patient references; ``dask_client`` caps that log for local clusters. Without the cap every
    chunk below stays alive until the run ends (flow memory grew 8 KB per patient).
    """
    import gc

    from echo_batch.domain import PatientRef, Release
    from echo_batch.run.cluster import LOCAL_LOW_LEVEL_LOG_LENGTH, close_cluster, dask_client

    chunks = 3 * LOCAL_LOW_LEVEL_LOG_LENGTH

    def live_refs() -> int:
        gc.collect()
        return sum(isinstance(o, PatientRef) for o in gc.get_objects())

    before = live_refs()
    client, cluster = dask_client(None, 1)
    try:
        for k in range(chunks):
            refs = [
                PatientRef(f"patient{k:03d}{j}", Path("/nowhere"), Release.CAMUS2023)
                for j in range(4)
            ]
            future = client.submit(len, refs, pure=False)
            assert future.result() == 4
            future.release()
            del refs
        kept = live_refs() - before
    finally:
        close_cluster(client, cluster)
    assert kept <= 4 * (LOCAL_LOW_LEVEL_LOG_LENGTH + 2), kept


def _new_children(before: set[int]) -> list[str]:
    """Command lines of live children started since ``before`` (resource tracker aside)."""
    import psutil

    me = psutil.Process()
    deadline = time.monotonic() + 15
    while True:
        extra = [
            " ".join(p.cmdline())
            for p in me.children(recursive=True)
            if p.pid not in before
            and p.is_running()
            and p.status() != psutil.STATUS_ZOMBIE
            and "multiprocessing.resource_tracker" not in " ".join(p.cmdline())
        ]
        if not extra or time.monotonic() > deadline:
            return extra
        time.sleep(0.5)


def test_prestarted_cluster_is_the_one_the_run_uses(cohort, serial, tmp_path, monkeypatch):
    """``echo-batch run`` starts the cluster before the flow: the run takes it, starts none."""
    import psutil

    import echo_batch.run.cluster as cohort_flow

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    started = []
    real = cohort_flow.dask_client
    monkeypatch.setattr(
        cohort_flow, "dask_client", lambda *a, **k: started.append(a) or real(*a, **k)
    )
    cohort_flow.prestart_cluster(None, 2, SegmentationSource.GT)
    try:
        record = _flow(data=str(cohort), out=str(tmp_path), workers=2)
    finally:
        cohort_flow.discard_prestarted()
    _assert_same(tmp_path, serial)
    assert record["summary"]["status"] == {"ok": 5}
    assert len(started) == 1
    assert cohort_flow._PRESTARTED == {}
    assert _new_children(before) == []  # the run closed the cluster it took


def test_prestarted_cluster_no_run_takes_is_closed(cohort, tmp_path):
    """A run with other settings starts its own cluster; the unused one is closed on discard."""
    import psutil

    import echo_batch.run.cluster as cohort_flow

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    cohort_flow.prestart_cluster(None, 1, SegmentationSource.GT)
    # started before the run's own: distributed.wait takes the process's latest client, and a
    # prestarted cluster finishing its start-up during the run would become it (the CLI always
    # takes the cluster it prestarted, so only this test has two clients)
    for future in cohort_flow._PRESTARTED.values():
        future.result()
    try:
        _flow(data=str(cohort), out=str(tmp_path), workers=2)  # 2 workers: not the prestarted one
        assert len(cohort_flow._PRESTARTED) == 1
    finally:
        cohort_flow.discard_prestarted()
    assert cohort_flow._PRESTARTED == {}
    assert _new_children(before) == []


def test_a_slow_chunk_times_out_alone_and_the_others_finish(cohort, tmp_path, monkeypatch):
    """The time limit applies to each chunk, not to the whole run (one hung chunk in 600 once
    held a run for 600 times the limit)."""
    from distributed import LocalCluster

    import flows.cohort_ef as cohort_flow
    from echo_batch.io.discovery import discover

    slow = discover(cohort).patients[2].patient_id
    real = cohort_flow.process_chunk

    def sometimes_slow(refs, options, model_id=None):
        if refs[0].patient_id == slow:
            time.sleep(8)  # far past its deadline (1 s x 2 chunks in flight per thread)
        return real(refs, options, model_id)

    monkeypatch.setattr(cohort_flow, "process_chunk", sometimes_slow)
    with LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    ) as cluster:
        record = _flow(
            data=cohort,
            out=tmp_path,
            dask_address=cluster.scheduler_address,
            chunk_size=1,
            chunk_timeout_s=1.0,
        )
    patients = pd.read_parquet(tmp_path / "patients.parquet").set_index("patient_id")
    assert record["summary"]["status"] == {"ok": 4, "failed": 1}
    assert patients.loc[slow, "status"] == "failed"
    assert "timed out" in patients.loc[slow, "error"]
    assert (patients.drop(index=slow).status == "ok").all()


def test_loops_through_the_flow_equal_the_serial_run(tmp_path):
    """A cohort of loops (detected ED/ES, frames.parquet) gives the same three files either way."""
    data = synth_cohort(tmp_path / "c", 4, seed=8, fmt="nifti", max_side=96, loops=True)
    chunk = ChunkOptions(segmentation=SegmentationSource.GT, frames="detected")
    run_cohort(RunOptions(data, tmp_path / "serial", chunk, chunk_size=2))
    record = _flow(data=data, out=tmp_path / "flow", workers=1, frames="detected")
    assert record["summary"]["patients"] == 4
    for name in ("patients", "images", "frames"):
        flow = pd.read_parquet(tmp_path / "flow" / f"{name}.parquet")
        serial = pd.read_parquet(tmp_path / "serial" / f"{name}.parquet")
        pd.testing.assert_frame_equal(flow, serial)
    frames = pd.read_parquet(tmp_path / "flow" / "frames.parquet")
    assert len(frames) > 4 * 2 * 5 and frames.is_ed.any() and frames.is_es.any()
