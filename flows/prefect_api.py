"""The Prefect API of a run: a temporary server in a child process that ends with the run.

With no API configured (``PREFECT_API_URL`` unset), Prefect starts a temporary server by itself
the first time the flow needs one (``prefect.server.api.server.SubprocessASGIServer``, a
``uvicorn`` child process) and stops it at interpreter exit. A run killed by SIGKILL never gets
there, and that server lived on, re-parented to init, holding its port and about 200 MB; every
crashed nightly run added one. So ``echo-batch run`` starts the same server itself
(:class:`ApiServer`: the Prefect app of ``create_app(ephemeral=True)`` under uvicorn, the UI off,
as Prefect does) with :func:`echo_batch.run.parent_watch.die_with_parent` in the server process,
and points the flow at it. A configured API (a Prefect server, Prefect Cloud, a test harness) is
used as it is and nothing is started.

Run as ``python -m flows.prefect_api --port PORT --parent PID [--kernel-signal]`` (by
:meth:`ApiServer.start` only).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

from echo_batch.errors import OrchestrationError
from echo_batch.run.parent_watch import add_watch_arguments, die_with_parent, watch_arguments

logger = logging.getLogger(__name__)

STOP_WAIT_S = 5.0
"""Time the server gets to stop after SIGTERM at the end of a run before it is killed."""
MIN_STARTUP_TIMEOUT_S = 120.0
"""Least time the server gets to answer. Prefect's default (20 s) was too short on a loaded machine:
the server's imports and database set-up took longer there while a benchmark used both cores, and
the run failed before it began. A larger ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS``
wins."""
_START_ATTEMPTS = 3  # another process may take the free port between choosing and binding it


class ApiServer:
    """A temporary Prefect API server in a child process that ends when this process ends.

    Attributes:
        port: the port it listens on (127.0.0.1).
        process: the server process.
    """

    def __init__(self, port: int, process: subprocess.Popen) -> None:
        self.port = port
        self.process = process

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @classmethod
    def start(cls) -> ApiServer:
        """Start the server process (returns at once; :meth:`wait_ready` waits for it)."""
        port = _free_port()
        env = {**os.environ, "PREFECT_UI_ENABLED": "0"}
        logger.info("starting a temporary Prefect API on 127.0.0.1:%d", port)
        process = subprocess.Popen(
            [sys.executable, "-m", __name__, "--port", str(port), *watch_arguments()], env=env
        )
        return cls(port, process)

    def wait_ready(self, timeout_s: float) -> None:
        """Wait until the API answers its health check.

        A server that could not bind its port (another process took it) is started again on
        another port, up to three times.

        Raises:
            OrchestrationError: the server did not answer within ``timeout_s`` or kept failing.
        """
        import httpx

        deadline = time.monotonic() + timeout_s
        attempts = 1
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                code = self.process.poll()
                if code is not None:
                    if attempts >= _START_ATTEMPTS:
                        raise OrchestrationError(
                            f"the temporary Prefect API exited with code {code} "
                            f"({_START_ATTEMPTS} attempts)"
                        )
                    attempts += 1
                    restarted = ApiServer.start()
                    self.port, self.process = restarted.port, restarted.process
                    continue
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.api_url}/health").status_code == 200:
                        return
                time.sleep(0.1)
        self.stop()
        raise OrchestrationError(
            f"the temporary Prefect API did not answer within {timeout_s:g} s (a busy machine? "
            "set PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS higher, or PREFECT_API_URL to "
            "a running Prefect server)"
        )

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after :data:`STOP_WAIT_S`; the process is reaped."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def startup_timeout_s(configured_s: float | None) -> float:
    """Seconds the temporary server gets to answer: Prefect's setting, at least the minimum."""
    return max(float(configured_s or 0.0), MIN_STARTUP_TIMEOUT_S)


@contextlib.contextmanager
def prefect_api() -> Iterator[str]:
    """The Prefect API a run uses, for the duration of a ``with`` block.

    The configured API when there is one; else a temporary :class:`ApiServer`, started as the
    block is entered and stopped as it ends (and by itself if this process dies), with
    ``PREFECT_API_URL`` pointing at it inside the block.

    Yields:
        The API URL.

    Raises:
        OrchestrationError: the temporary server did not start.
    """
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        PREFECT_UI_URL,
        temporary_settings,
    )

    configured = PREFECT_API_URL.value()
    if configured:
        yield configured
        return
    server = ApiServer.start()
    try:
        server.wait_ready(
            startup_timeout_s(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
        )
        # the server has no UI: no "View at" link to it in the log
        with temporary_settings(updates={PREFECT_API_URL: server.api_url, PREFECT_UI_URL: ""}):
            try:
                yield server.api_url
            finally:
                _drain_to(server)
    finally:
        server.stop()


def _drain_to(server: ApiServer) -> None:
    """Send the log lines and events still queued to the server before it stops (as Prefect's
    test harness does), so that nothing fails to reach it at interpreter exit."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    if server.process.poll() is None:
        APILogWorker.drain_all(timeout=STOP_WAIT_S)
        EventsWorker.drain_all(timeout=STOP_WAIT_S)


def _free_port() -> int:
    """A TCP port of 127.0.0.1 that is free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(argv: list[str] | None = None) -> None:
    """Serve the Prefect API until SIGTERM, or until the parent process ends."""
    parser = argparse.ArgumentParser(description="temporary Prefect API of an echo-batch run")
    parser.add_argument("--port", type=int, required=True)
    add_watch_arguments(parser)
    args = parser.parse_args(argv)
    die_with_parent(args.parent, kernel_signal=args.kernel_signal)
    import uvicorn
    from prefect.server.api.server import create_app

    app = create_app(ephemeral=True, final=True)  # API only, the services of a temporary server
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="error", lifespan="on")


if __name__ == "__main__":
    main()
