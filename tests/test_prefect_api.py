"""The run's temporary Prefect API: how long it may take to start, and how a failed start reads."""

from __future__ import annotations

import subprocess
import sys

import pytest

from echo_batch.errors import EchoBatchError, OrchestrationError
from flows import prefect_api
from flows.prefect_api import MIN_STARTUP_TIMEOUT_S, ApiServer, startup_timeout_s


@pytest.mark.parametrize(
    ("configured", "expected"),
    [(None, MIN_STARTUP_TIMEOUT_S), (20.0, MIN_STARTUP_TIMEOUT_S), (600.0, 600.0)],
)
def test_startup_timeout_is_prefect_s_setting_but_never_below_the_minimum(configured, expected):
    # Prefect's default of 20 s failed a run on a machine busy with a benchmark
    assert MIN_STARTUP_TIMEOUT_S >= 60
    assert startup_timeout_s(configured) == expected


def _silent_server() -> ApiServer:
    """A 'server' that runs but never answers its health check."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    return ApiServer(prefect_api._free_port(), process)


def test_a_server_that_never_answers_is_stopped_and_named_in_a_clear_error():
    server = _silent_server()
    with pytest.raises(OrchestrationError, match=r"did not answer within 0\.5 s") as info:
        server.wait_ready(0.5)
    assert isinstance(info.value, EchoBatchError)  # the CLI prints it as one line, exit 2
    assert "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" in str(info.value)
    assert server.process.poll() is not None  # not left running


def test_a_server_that_keeps_exiting_is_tried_three_times(monkeypatch):
    starts = []

    def exiting(cls) -> ApiServer:
        process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
        starts.append(process)
        return ApiServer(prefect_api._free_port(), process)

    monkeypatch.setattr(ApiServer, "start", classmethod(exiting))
    server = ApiServer.start()
    with pytest.raises(OrchestrationError, match="exited with code 3"):
        server.wait_ready(60.0)
    assert len(starts) == 3
