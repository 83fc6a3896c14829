"""CPU time of a process group, by process and by thread, read from ``/proc``.

The job runs in its own process group (``txwatch.runner.JobProcess``): the
JVM of the mini-cluster, whose task threads also run the thread-mode Python
operators, and the Python worker processes that Flink starts for the pandas
scoring function. ``GroupCpu`` samples ``/proc`` in a background thread and
keeps each process's and thread's last reading, so processes that exit
before the end still count (up to one sampling interval short). Each sample
is also kept with its time, so that ``window`` can give the CPU spent
between two moments: the steady state of a run, without its start-up. The
largest resident memory of the whole group seen at a sample is kept too.

Limitations: Linux only; thread names are cut to 15 characters by the
kernel, so threads of one operator chain share a name.
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def _read_stat(path: Path) -> tuple[str, int, float] | None:
    """(name, process group, CPU seconds) from a ``stat`` file."""
    try:
        text = path.read_text()
    except OSError:
        return None
    name = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    # After the name: state, ppid, pgrp, ... utime and stime are 12th and 13th.
    return name, int(fields[2]), (int(fields[11]) + int(fields[12])) / _TICKS


class GroupCpu:
    """Samples the CPU seconds of every process and thread of a process group."""

    def __init__(self, pgid: int, interval: float = 0.5):
        self.pgid = pgid
        self.interval = interval
        self.processes: dict[int, tuple[str, float]] = {}
        self.threads: dict[tuple[int, int], tuple[str, float]] = {}
        self.samples: list[tuple[float, dict[str, float], dict[str, float]]] = []
        self.max_rss_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> GroupCpu:
        self._thread.start()
        return self

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        self._sample()
        return self.summary()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        self._read()
        self.samples.append((time.time(), self._by_thread(), _machine()))

    def _read(self) -> None:
        resident = 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            stat = _read_stat(entry / "stat")
            if stat is None or stat[1] != self.pgid:
                continue
            pid = int(entry.name)
            self.processes[pid] = (stat[0], stat[2])
            resident += _resident_bytes(entry)
            try:
                tasks = list((entry / "task").iterdir())
            except OSError:
                continue
            for task in tasks:
                thread = _read_stat(task / "stat")
                if thread is not None:
                    self.threads[(pid, int(task.name))] = (thread[0], thread[2])
        self.max_rss_bytes = max(self.max_rss_bytes, resident)

    def _by_thread(self) -> dict[str, float]:
        by_thread: dict[str, float] = defaultdict(float)
        for (pid, _), (name, seconds) in self.threads.items():
            by_thread[f"{self.processes.get(pid, ('?', 0))[0]}/{name}"] += seconds
        return dict(by_thread)

    def summary(self) -> dict:
        """CPU seconds by process name and by thread name (the busiest)."""
        by_process: dict[str, float] = defaultdict(float)
        for name, seconds in self.processes.values():
            by_process[name] += seconds
        return {
            "by_process": dict(sorted(by_process.items(), key=lambda item: -item[1])),
            "busiest_threads": _busiest(self._by_thread()),
            "total": sum(by_process.values()),
            "max_rss_bytes": self.max_rss_bytes,
        }

    def window(self, start: float, end: float) -> dict:
        """CPU seconds by thread name between two epoch times (nearest samples)."""
        if not self.samples:
            return {"busiest_threads": {}, "total": 0.0, "seconds": 0.0}
        first = min(self.samples, key=lambda s: abs(s[0] - start))
        last = min(self.samples, key=lambda s: abs(s[0] - end))
        spent = {
            name: seconds - first[1].get(name, 0.0) for name, seconds in last[1].items()
        }
        seconds = last[0] - first[0]
        machine = {
            kind: (last[2][kind] - first[2][kind]) / seconds if seconds > 0 else 0.0
            for kind in last[2]
        }
        return {
            "busiest_threads": _busiest(spent),
            "total": sum(spent.values()),
            "seconds": seconds,
            # Cores in use over the window: every process, and the hypervisor's
            # share taken from this machine (steal).
            "machine_busy_cores": machine.get("busy", 0.0),
            "machine_steal_cores": machine.get("steal", 0.0),
        }


def micros_per_row(steady: dict, prefixes: str | tuple[str, ...]) -> float:
    """CPU us per row of a ``window`` with ``rows``, in threads named ``prefixes``."""
    if not steady.get("rows"):
        return 0.0
    seconds = sum(
        spent
        for name, spent in steady["busiest_threads"].items()
        if name.startswith(prefixes)
    )
    return seconds / steady["rows"] * 1e6


def _resident_bytes(process: Path) -> int:
    """Resident memory of a process, 0 once it has gone."""
    try:
        return int((process / "statm").read_text().split()[1]) * _PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return 0


def _machine() -> dict[str, float]:
    """CPU seconds of the whole machine so far: busy and stolen."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return {"busy": 0.0, "steal": 0.0}
    ticks = [int(v) for v in fields]
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks[:8]
    return {
        "busy": (user + nice + system + irq + softirq) / _TICKS,
        "steal": steal / _TICKS,
    }


def _busiest(by_thread: dict[str, float], count: int = 12) -> dict[str, float]:
    return dict(sorted(by_thread.items(), key=lambda item: -item[1])[:count])
