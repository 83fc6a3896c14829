"""A standalone Flink cluster driven through scripts/cluster.sh and its REST API."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import urllib.request
from pathlib import Path

from txwatch.config import PROJECT_ROOT
from txwatch.runner import wait_until


class FlinkCluster:
    """One cluster: ``env`` selects its ports and folders (see cluster.sh)."""

    def __init__(self, env: dict[str, str] | None = None):
        self.env = {**os.environ, **(env or {})}
        port = self.env.get("TXWATCH_FLINK_REST_PORT", "18081")
        self.rest = f"http://127.0.0.1:{port}"
        self.pid_dir = (
            Path(self.env.get("TXWATCH_FLINK_DIR", str(PROJECT_ROOT / ".run/flink")))
            / "pid"
        )

    def script(self, *args: str, timeout: float = 300) -> str:
        done = subprocess.run(
            ["bash", str(PROJECT_ROOT / "scripts/cluster.sh"), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=PROJECT_ROOT,
            env=self.env,
        )
        assert done.returncode == 0, f"cluster.sh {args[0]}: {done.stdout}{done.stderr}"
        return done.stdout

    def start(self) -> None:
        self.script("start")

    def stop(self) -> None:
        self.script("stop")

    def submit(self, *job_args: str, savepoint: str | None = None) -> str:
        """Submit the job detached; returns its id once it is listed."""
        restore = ["--from-savepoint", savepoint] if savepoint else []
        out = self.script("submit", *restore, *job_args, "--detached", timeout=600)
        ids = re.findall(r"\b[0-9a-f]{32}\b", out)
        assert ids, f"no job id in the submission output: {out}"
        return ids[-1]

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(f"{self.rest}{path}", timeout=10) as response:
            return json.load(response)

    def post(self, path: str, body: dict) -> dict:
        request = urllib.request.Request(
            f"{self.rest}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    def job(self, job_id: str) -> dict:
        return self.get(f"/jobs/{job_id}")

    def state(self, job_id: str) -> str:
        return self.job(job_id)["state"]

    def all_running(self, job_id: str) -> bool:
        """The job runs and every one of its tasks does (not only scheduled)."""
        job = self.job(job_id)
        return job["state"] == "RUNNING" and all(
            v["status"] == "RUNNING" for v in job["vertices"]
        )

    def completed_checkpoints(self, job_id: str) -> int:
        return int(self.get(f"/jobs/{job_id}/checkpoints")["counts"]["completed"])

    def failures(self, job_id: str) -> list[str]:
        """The exception names of the job's failures so far, oldest first."""
        history = self.get(f"/jobs/{job_id}/exceptions")["exceptionHistory"]
        entries = sorted(history["entries"], key=lambda e: e["timestamp"])
        return [e["exceptionName"] for e in entries]

    def root_exception(self, job_id: str) -> str | None:
        return self.get(f"/jobs/{job_id}/exceptions").get("root-exception")

    def stop_with_savepoint(self, job_id: str, directory: Path) -> str:
        """Stop the job with a savepoint in ``directory``; returns its path."""
        trigger = self.post(
            f"/jobs/{job_id}/stop",
            {"targetDirectory": str(directory), "drain": False},
        )["request-id"]
        result: dict = {}

        def done() -> bool:
            status = self.get(f"/jobs/{job_id}/savepoints/{trigger}")
            result.update(status)
            return status["status"]["id"] == "COMPLETED"

        wait_until(done, 180, "the savepoint", interval=1)
        operation = result["operation"]
        assert "location" in operation, operation.get("failure-cause")
        return operation["location"]

    def cancel(self, job_id: str) -> None:
        request = urllib.request.Request(
            f"{self.rest}/jobs/{job_id}?mode=cancel", method="PATCH"
        )
        urllib.request.urlopen(request, timeout=10).close()

    def kill_taskmanagers(self) -> list[int]:
        """SIGKILL every TaskManager of this cluster; returns their pids."""
        pids = []
        for pid_file in self.pid_dir.glob("flink-*-taskexecutor.pid"):
            for line in pid_file.read_text().split():
                try:
                    os.kill(int(line), signal.SIGKILL)
                    pids.append(int(line))
                except ProcessLookupError:
                    pass
            pid_file.unlink()
        return pids
