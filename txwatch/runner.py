"""Start, watch and stop the streaming job as a separate process.

The demo, the benchmark and the integration tests run the job the way an
operator would: ``python -m jobs.pipeline`` in its own process (a local Flink
mini-cluster), or ``flink run`` against a standalone cluster. ``JobProcess``
wraps the first; ``wait_until`` polls for a condition with a deadline and a
progress callback.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from txwatch.config import PROJECT_ROOT

logger = logging.getLogger(__name__)


class JobProcess:
    """The job running in a child process, in its own process group."""

    def __init__(
        self, args: list[str], log_path: Path, env: dict[str, str] | None = None
    ):
        self.args = args
        self.log_path = log_path
        self.env = env
        self.process: subprocess.Popen | None = None

    def start(self) -> JobProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "w")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jobs.pipeline", *self.args],
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(self.env or {})},
            start_new_session=True,
        )
        logger.info("job started (pid %d), log %s", self.process.pid, self.log_path)
        return self

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the job and every process it started (JVM, Python workers)."""
        if not self.running():
            return
        pgid = os.getpgid(self.process.pid)
        os.killpg(pgid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.process.wait(timeout=timeout)
        try:  # children of the JVM may outlive it briefly
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        logger.info("job stopped")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(
                self.log_path.read_text(errors="replace").splitlines()[-lines:]
            )
        except OSError:
            return ""


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    interval: float = 2.0,
    alive: Callable[[], bool] | None = None,
    on_poll: Callable[[], None] | None = None,
) -> float:
    """Poll ``condition`` until true; return the seconds waited.

    Raises ``TimeoutError`` naming ``what`` when the deadline passes, or
    ``RuntimeError`` when ``alive`` says the job died first.
    """
    started = time.monotonic()
    while True:
        if on_poll:
            on_poll()
        if condition():
            return time.monotonic() - started
        if alive is not None and not alive():
            raise RuntimeError(f"the job stopped before {what}")
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(interval)
