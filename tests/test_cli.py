"""The command line: discover, synth and a ground-truth run through typer's runner."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from echo_batch.cli import _log_handler, app

runner = CliRunner()
SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "camus224-test"


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("discover", "run", "synth", "train", "evaluate"):
        assert command in result.output


def test_discover_json_on_the_bundled_sample():
    result = runner.invoke(app, ["discover", str(SAMPLE), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["n_patients"] == 50
    assert summary["splits"] == {"testing": 50}
    assert summary["files"]["images"] == 200
    assert summary["files"]["ground_truth"] == 200
    assert summary["problems"] == []


def test_discover_reports_problems_in_text(tmp_path):
    (tmp_path / "patient0001").mkdir()
    (tmp_path / "patient0001" / "patient0001_2CH_ED.nii.gz").write_bytes(b"x")
    (tmp_path / "notes.bin").write_bytes(b"x")
    result = runner.invoke(app, ["discover", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "patients: 1" in result.output
    assert "missing 4CH_ES image" in result.output
    assert "stray file next to the patient folders" in result.output


def test_discover_unusable_root_exits_non_zero(tmp_path):
    result = runner.invoke(app, ["discover", str(tmp_path / "absent")])
    assert result.exit_code == 2
    assert "DATA root is not a readable folder" in result.output


def test_synth_then_gt_run(tmp_path):
    data, out = tmp_path / "syn", tmp_path / "out"
    result = runner.invoke(app, ["synth", str(data), "--patients", "2", "--format", "mhd"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app, ["run", str(data), "--out", str(out), "--segmentation", "gt", "--serial"]
    )
    assert result.exit_code == 0, result.output
    assert "patients: 2 ok 2" in result.output
    patients = pd.read_parquet(out / "patients.parquet")
    assert sorted(patients.patient_id) == ["patient0001", "patient0002"]
    record = json.loads((out / "run.json").read_text())
    assert record["model_id"] == "gt"
    assert record["summary"]["status"] == {"ok": 2}


def test_run_rejects_an_unknown_segmentation(tmp_path):
    result = runner.invoke(app, ["run", str(SAMPLE), "--out", str(tmp_path), "--segmentation", "x"])
    assert result.exit_code != 0


_LOG_ONE_MESSAGE = """
import logging, sys
from echo_batch.cli import _setup_logging

_setup_logging(False)
logging.getLogger("echo_batch.run.chunk").warning(sys.argv[1])
"""


def test_log_lines_are_not_wrapped_when_stderr_is_not_a_terminal():
    """Piped or CI stderr: one problem, one line, however long (Rich would wrap at 80)."""
    message = "patient0001: " + " ".join(f"word{i:03d}" for i in range(36))
    assert len(message) == 300
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "TTY_COMPATIBLE")}
    proc = subprocess.run(
        [sys.executable, "-c", _LOG_ONE_MESSAGE, message],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].endswith(message), proc.stderr
    assert "WARNING" in lines[0]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_handler_is_rich_on_a_terminal_and_plain_otherwise():
    from rich.logging import RichHandler

    assert isinstance(_log_handler(_Terminal()), RichHandler)
    plain = _log_handler(io.StringIO())
    assert type(plain) is logging.StreamHandler


def test_run_with_unusable_root_exits_before_starting_anything(tmp_path, monkeypatch):
    """A wrong DATA path is reported at once: no Dask cluster, no Prefect API, exit status 2."""
    import echo_batch.run.cluster as cluster
    import flows.cohort_ef as cohort_flow

    started = []
    monkeypatch.setattr(cluster, "prestart_cluster", lambda *a: started.append(a))
    monkeypatch.setattr(cohort_flow, "cohort_ef", lambda *a, **k: started.append(k))
    result = runner.invoke(app, ["run", str(tmp_path / "absent"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "DATA root is not a readable folder" in result.output
    assert started == []
    assert not (tmp_path / "o").exists()


def test_dask_stays_quiet_after_it_is_imported():
    """Dask sets its loggers when imported (after the CLI's set-up): they must stay at WARNING.

    Otherwise its INFO chatter, and the benign CommClosedError traceback it logs at INFO while a
    cluster shuts down, end up in the run log.
    """
    code = (
        "import logging, sys\n"
        "from echo_batch.cli import _setup_logging\n"
        "_setup_logging(False)\n"
        "import distributed\n"
        "print(logging.getLogger('distributed').getEffectiveLevel())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert int(out.stdout.strip()) == logging.WARNING, out.stderr


def test_embedded_prefect_analytics_off_unless_the_user_says_otherwise(monkeypatch):
    from echo_batch.cli import _quiet_embedded_prefect

    monkeypatch.delenv("PREFECT_SERVER_ANALYTICS_ENABLED", raising=False)
    _quiet_embedded_prefect()
    assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "true")
    _quiet_embedded_prefect()
    assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "true"
