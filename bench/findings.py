"""What the measurements say: where the job's time goes and what would move it.

Every figure in the text is computed from the run's results; a sentence
whose figures are missing (a section that did not run) is left out.
"""

from __future__ import annotations

from bench.cpu import micros_per_row

OPERATORS = (
    "Validate (operator function)",
    "CardHistory (operator function)",
    "TerminalHistory (operator function)",
)
TARGET_TX_PER_S = 25_000
CORES = 2


def findings(sections: dict) -> list[str]:
    facts = _Facts(sections)
    out = []
    out += facts.budget()
    out += facts.python_share()
    out += facts.threads()
    out += facts.scaling()
    out += facts.peers()
    out += facts.bundles()
    out += facts.graphs()
    out += facts.state()
    out += facts.scoring()
    out += facts.latency()
    out += ["", "### Recommended changes to `jobs/`", ""] + facts.recommendations()
    return out


class _Facts:
    """Figures derived from one run's sections."""

    def __init__(self, sections: dict):
        self.sections = sections
        self.micros = sections.get("pieces", {}).get("micros_per_transaction", {}) or {}
        runs = sections.get("endtoend", {}).get("runs", []) or []
        self.runs = {r["variant"]: r for r in runs}
        self.p1 = self.runs.get("p1")
        self.p2 = self.runs.get("p2")
        steady = (self.p1 or {}).get("cpu_steady") or {}
        self.steady = steady if steady.get("rows") else None

    # -- figures -----------------------------------------------------------------

    def cpu_per_row(self) -> float | None:
        if self.steady is None:
            return None
        return self.steady["total"] / self.steady["rows"] * 1e6

    def thread(self, prefix: str) -> float:
        """Steady-state CPU us per row of threads whose name starts with ``prefix``."""
        return micros_per_row(self.steady or {}, prefix)

    def python(self) -> float | None:
        if not all(name in self.micros for name in OPERATORS):
            return None
        return sum(self.micros[name] for name in OPERATORS)

    def kernel(self, method: str, batch: str) -> float | None:
        rates = self.sections.get("kernel", {}).get("rows_per_second", {})
        return rates.get(method, {}).get(batch)

    # -- findings -----------------------------------------------------------------

    def budget(self) -> list[str]:
        cpu = self.cpu_per_row()
        if cpu is None:
            return []
        return [
            f"- **The job spends {cpu:,.0f} us of CPU per transaction** in its steady "
            f"state at parallelism 1 (all processes and threads, run p1), so "
            f"{CORES} fully free cores could carry at most about "
            f"{CORES * 1e6 / cpu:,.0f} tx/s. {TARGET_TX_PER_S:,} tx/s on {CORES} "
            f"cores leaves {CORES * 1e6 / TARGET_TX_PER_S:,.0f} us per transaction "
            "for everything."
        ]

    def python_share(self) -> list[str]:
        cpu, python = self.cpu_per_row(), self.python()
        score = self.micros.get("ScoreBatch.eval, compact graph")
        if cpu is None or python is None or score is None:
            return []
        ours = python + score
        features = self.micros.get("features (pickled state)")
        rules = (
            f" Of the operator functions' {python:,.0f} us, the features with their "
            f"pickled state take {features:,.0f}; the rest is parsing, rule "
            "evaluation (a dict per row for the rule engine, JSON of the hits), "
            "dead-letter checks and building rows."
            if features
            else ""
        )
        return [
            f"- **Our Python code is a small part of it.** Timed alone on one core, "
            f"the three operator functions of `jobs.operators` cost {python:,.0f} us "
            f"per transaction and `ScoreBatch.eval` {score:,.0f} us: {ours:,.0f} us, "
            f"{ours / cpu:.0%} of the job's {cpu:,.0f}. The other "
            f"{cpu - ours:,.0f} us are spent by Flink around that code." + rules
        ]

    def threads(self) -> list[str]:
        if self.steady is None:
            return []
        source = self.thread("java/Source: transac")
        card = self.thread("java/card-history")
        terminal = self.thread("java/terminal-histor")
        worker = self.thread("python/")
        jit = self.thread("java/C2 Compiler") + self.thread("java/C1 Compiler")
        gc = self.thread("java/GC Thread")
        lines = [
            f"- **By thread, steady state, us per row:** source + validation chain "
            f"{source:,.0f}; card history {card:,.0f}; "
            f"terminal history + the scoring call + the sinks {terminal:,.0f}; the "
            f"pandas function's worker process {worker:,.0f}; JIT compilers "
            f"{jit:,.0f}" + (f"; garbage collection {gc:,.0f}" if gc >= 1 else "") + "."
        ]
        pairs = [
            (
                "source + validation chain",
                source,
                self.micros.get("Validate (operator function)"),
            ),
            ("card history", card, self.micros.get("CardHistory (operator function)")),
            (
                "pandas worker",
                worker,
                self.micros.get("ScoreBatch.eval, compact graph"),
            ),
        ]
        gaps = [
            f"{name} {thread:,.0f} against {alone:,.0f}"
            for name, thread, alone in pairs
            if alone and thread
        ]
        if gaps:
            lines.append(
                "  The same code costs several times more inside the job than alone ("
                + "; ".join(gaps)
                + " us): every row crosses between the JVM and Python, field by "
                "field, at each of the three thread-mode Python operators "
                "(validate, card history, terminal history), and the pandas "
                "function's rows travel to a second process as Arrow batches over "
                "gRPC."
            )
        return lines

    def cores(self, run: dict) -> float | None:
        steady = run.get("cpu_steady") or {}
        return steady["total"] / steady["seconds"] if steady.get("seconds") else None

    def others(self, run: dict) -> float | None:
        """Cores busy outside the job during its steady state."""
        busy = (run.get("cpu_steady") or {}).get("machine_busy_cores")
        job = self.cores(run)
        return max(busy - job, 0.0) if busy is not None and job is not None else None

    def scaling(self) -> list[str]:
        if not (self.p1 and self.p2):
            return []
        ratio = self.p2["rows_per_second"] / self.p1["rows_per_second"]
        busy1, busy2 = self.cores(self.p1), self.cores(self.p2)
        busy = (
            f" The job kept {busy1:.2f} cores busy at parallelism 1 and {busy2:.2f} "
            f"at 2, of {CORES} shared with the broker, the database, the load "
            "generator and whatever else ran on the machine."
            if busy1 and busy2
            else ""
        )
        return [
            f"- **Parallelism 2** gives {self.p2['rows_per_second']:,.0f} tx/s against "
            f"{self.p1['rows_per_second']:,.0f} at 1 ({ratio:.2f}x). Even at "
            "parallelism 1 the job runs four task threads and a second process in "
            "a pipeline, so a second slot mostly competes for the same cores." + busy
        ]

    def _cpu_note(self, run: dict) -> str:
        steady = run.get("cpu_steady") or {}
        micros = steady["total"] / steady["rows"] * 1e6 if steady.get("rows") else None
        others = self.others(run)
        note = f"{micros:,.0f} us CPU per row" if micros else "CPU not sampled"
        return note + (f", {others:.2f} cores busy outside the job" if others else "")

    def peers(self) -> list[str]:
        peers = self.sections.get("peers", {})
        best = max(
            (r["rows_per_second"] for r in (self.p1, self.p2) if r), default=None
        )
        out = []
        sklearn, river = peers.get("sklearn"), peers.get("river")
        if best and isinstance(sklearn, dict):
            out.append(
                f"- **Against the peers**, the job's best {best:,.0f} tx/s is "
                f"{best / sklearn['rows_per_second']:.1f}x the per-record "
                f"scikit-learn consumer ({sklearn['rows_per_second']:,.0f} tx/s, "
                "which spends nearly all its time in `score_samples` on one row)"
                + (
                    f" and {best / river['rows_per_second']:.2f}x River's half-space "
                    f"trees ({river['rows_per_second']:,.0f} tx/s, one process doing "
                    "the same validation and features)"
                    if isinstance(river, dict)
                    else ""
                )
                + "."
            )
        return out

    def state(self) -> list[str]:
        rates = self.sections.get("state", {}).get("rows_per_second", {})
        pickled = {int(size): r["pickled"] for size, r in rates.items()}
        out = []
        if len(pickled) >= 2:
            low, high = min(pickled), max(pickled)
            out.append(
                f"- **State size does not slow the feature step in Python:** "
                f"{pickled[low]:,.0f} tx/s with {low:,} cards in state, "
                f"{pickled[high]:,.0f} with {high:,} (pickled state, one core)."
            )
        runs = self.sections.get("jobstate", {}).get("runs", [])
        for backend in ("hashmap", "rocksdb"):
            mine = [r for r in runs if r["state_backend"] == backend]
            if len(mine) < 2:
                continue
            low, high = mine[0], mine[-1]
            out.append(
                f"- **In the job, {backend} state backend:** "
                f"{low['rows_per_second']:,.0f} tx/s with {low['cards']:,} cards in "
                f"state and {high['rows_per_second']:,.0f} with {high['cards']:,} "
                f"({high['rows_per_second'] / low['rows_per_second']:.2f}x; "
                f"{_micros(low)} and {_micros(high)} us of CPU a row). By part, "
                f"us a row: {_parts(low, high)}; alerted {low['alert_share']:.2%} "
                f"and {high['alert_share']:.2%}. Memory {_gib(low)} and "
                f"{_gib(high)} GiB; checkpoint directory {_mib(low)} and "
                f"{_mib(high)} MiB."
            )
        return out

    def graphs(self) -> list[str]:
        skl2onnx = self.runs.get("p1-skl2onnx")
        if not (self.p1 and skl2onnx):
            return []
        ratio = self.p1["rows_per_second"] / skl2onnx["rows_per_second"]
        return [
            "- **The ONNX graph in the job:** the compact graph (what training "
            f"writes) {self.p1['rows_per_second']:,.0f} tx/s "
            f"({self._cpu_note(self.p1)}); skl2onnx's graph of the same forest "
            f"{skl2onnx['rows_per_second']:,.0f} tx/s ({self._cpu_note(skl2onnx)}): "
            f"{ratio:.2f}x, at parallelism 1."
        ]

    def bundles(self) -> list[str]:
        variants = [r for name, r in self.runs.items() if name.startswith("p1-bundle")]
        if not (self.p1 and variants):
            return []
        base = self.p1["rows_per_second"]
        parts = []
        for r in variants:
            s = r["job_settings"]
            parts.append(
                f"{s['bundle_size']:,} / {s['bundle_time_ms']:,} ms / "
                f"{s['score_batch_size']:,}: {r['rows_per_second']:,.0f} tx/s "
                f"({r['rows_per_second'] / base:.2f}x, {self._cpu_note(r)})"
            )
        best = max([base] + [r["rows_per_second"] for r in variants])
        others = [self.others(r) for r in [self.p1, *variants]]
        busy = (
            " Other work kept up to "
            f"{max(o for o in others if o is not None):.2f} cores busy outside the "
            "job during these runs, which moves rates as much as the knobs; the CPU "
            "per row is the steadier comparison."
            if any(o is not None and o > 0.3 for o in others)
            else ""
        )
        return [
            "- **Bundle and batch sizes** (bundle size / bundle time / Arrow batch): "
            f"5,000 / 200 ms / 5,000 (default) {base:,.0f} tx/s "
            f"({self._cpu_note(self.p1)}); "
            + "; ".join(parts)
            + f". The best of them is still {TARGET_TX_PER_S / best:.0f}x short of "
            f"{TARGET_TX_PER_S:,} tx/s: the cost is paid per row, not per bundle."
            + busy
        ]

    def scoring(self) -> list[str]:
        skl = self.micros.get("  of which scoring, skl2onnx")
        compact = self.micros.get("  of which scoring, compact")
        explain = self.micros.get("  of which explanations, skl2onnx")
        if not (skl and compact):
            return []
        reasons = self.sections.get("kernel", {}).get("reasons_ms_per_row", {})
        stage_ms = reasons.get("supervised stage")
        alert_share = ""
        if self.p1 and self.p1.get("rows"):
            share = self.p1["alerts_table"] / self.p1["rows"]
            alert_share = (
                f"; {share:.1%} of run p1's rows alerted (the benchmark's model "
                "is trained on two weeks of April, its supervised stage on the "
                "first week's labels)"
            )
        cost = (
            f" The reasons are exact SHAP values: {stage_ms:,.1f} ms per alerting "
            f"row for the supervised stage{alert_share}."
            if stage_ms
            else ""
        )
        return [
            f"- **Scoring is cheap either way:** {skl:,.1f} us per row with skl2onnx's "
            f"graph, {compact:,.1f} with the compact graph, on 5,000-row batches, "
            f"both stages; explaining the alerting rows adds {explain or 0:,.1f} us "
            f"per row on average.{cost}"
        ]

    def latency(self) -> list[str]:
        runs = self.sections.get("latency", {}).get("runs", []) or []
        out = []
        for r in runs:
            lat = r["latency_ms"]
            record, visible, row = (
                lat["alert record"]["p50"],
                lat["alert visible"]["p50"],
                lat["row"]["p50"],
            )
            if None in (record, visible, row):
                continue
            state = "keeps up" if r["kept_up"] else "does not keep up"
            out.append(
                f"- **At {r['rate']:,.0f} tx/s** the job {state}; median latency "
                f"{record:,.0f} ms to the alert record, {visible:,.0f} ms until the "
                f"alert is visible (checkpoint every "
                f"{r['job_settings']['checkpoint_interval_ms']:,} ms), {row:,.0f} ms "
                "to the PostgreSQL row."
            )
        return out

    # -- recommendations -------------------------------------------------------------

    def recommendations(self) -> list[str]:
        worker = self.thread("python/")
        terminal = self.thread("java/terminal-histor")
        score = self.micros.get("ScoreBatch.eval, compact graph")
        one_row = self.kernel("compact graph (Scorer)", "1")
        python = self.python()
        features = self.micros.get("features (pickled state)")
        lines = [
            "1. **Scoring inside the terminal operator** would remove the "
            "pandas function's worker process, its Arrow batches over gRPC and the "
            "`PythonCalc` with its Table conversions"
            + (
                f" ({worker:,.0f} us per row in the worker process; the terminal "
                f"chain's thread, {terminal:,.0f} us per row, also runs the "
                "`PythonCalc` and the sinks)"
                if worker
                else ""
            )
            + ". The price: rows would be scored one at a time"
            + (
                f" ({1e6 / one_row:,.0f} us per row for the compact graph at batch "
                f"1, against {score:,.1f} us for `ScoreBatch.eval` on batches)"
                if one_row and score
                else ""
            )
            + ". A keyed Python function cannot hold a batch of rows across calls "
            "safely: PyFlink gives it no hook before a checkpoint barrier to flush "
            "what it holds, so rows held at a failure would be lost.",
            "2. **Fewer Python objects per row in the keyed operators.** "
            + (
                f"The operator functions cost {python:,.0f} us per row alone, the "
                f"features in them {features:,.0f}: "
                if python and features
                else ""
            )
            + "`CardHistory` builds a dict of the row and its features for the rule "
            "engine and `json.dumps` the hits on every row, `TerminalHistory` "
            "`json.loads` them again and builds another dict. Skip rule evaluation "
            "when no rule of that key kind is active, and pass hits as a tuple until "
            "the table.",
            "3. **Alert latency is set by the checkpoint interval.** Alerts are "
            "written in Kafka transactions committed at checkpoints, so an alert is "
            "visible one interval (plus the checkpoint's duration) after it is "
            "written. To "
            "show alerts within a second, run with `job.checkpoint_interval_ms` near "
            "1,000, or send alerts at least once, keyed by transaction id, and let "
            "consumers drop repeats.",
        ]
        return lines


def _micros(run: dict) -> str:
    value = run.get("cpu_micros_per_row")
    return "-" if value is None else f"{value:,.0f}"


def _gib(run: dict) -> str:
    return f"{run['max_rss_bytes'] / 2**30:.2f}"


def _mib(run: dict) -> str:
    return f"{run['max_checkpoint_dir_bytes'] / 2**20:,.0f}"


def _parts(low: dict, high: dict) -> str:
    a, b = low["cpu_micros_per_row_by_part"], high["cpu_micros_per_row_by_part"]
    return ", ".join(f"{part} {a[part]:,.0f} and {b[part]:,.0f}" for part in a)
