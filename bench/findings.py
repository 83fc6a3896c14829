"""What the measurements say: where the job's time goes and what would move it.

Every figure in the text is computed from the run's results; when a section
did not run, the sentences that need it are left out.
"""

from __future__ import annotations

OPERATORS = (
    "Validate (operator function)",
    "CardHistory (operator function)",
    "TerminalHistory (operator function)",
)


def _micros(sections: dict) -> dict:
    return sections.get("pieces", {}).get("micros_per_transaction", {}) or {}


def _runs(sections: dict) -> dict:
    return {r["variant"]: r for r in sections.get("endtoend", {}).get("runs", []) or []}


def _thread_micros(run: dict, prefix: str) -> float:
    """CPU microseconds per row of the threads whose name starts with ``prefix``."""
    threads = run["cpu"].get("busiest_threads", {})
    seconds = sum(s for name, s in threads.items() if name.startswith(prefix))
    return seconds / run["rows"] * 1e6


def findings(sections: dict) -> list[str]:
    micros = _micros(sections)
    runs = _runs(sections)
    p1, p2 = runs.get("p1"), runs.get("p2")
    out = []

    if p1:
        cpu_per_row = p1["cpu"]["total"] / p1["rows"] * 1e6
        out.append(
            f"- **The job spends {cpu_per_row:,.0f} us of CPU per transaction** at "
            f"parallelism 1 (run p1, start-up included), which caps it near "
            f"{2e6 / cpu_per_row:,.0f} tx/s on two fully free cores. 25,000 tx/s on "
            f"two cores needs about {2e6 / 25_000:,.0f} us per transaction."
        )
    python = sum(micros.get(name, 0.0) for name in OPERATORS)
    score = micros.get("ScoreBatch.eval, skl2onnx graph")
    if p1 and python and score:
        cpu_per_row = p1["cpu"]["total"] / p1["rows"] * 1e6
        ours = python + score
        out.append(
            f"- **Our Python code is not what dominates.** The three operator functions "
            f"cost {python:,.0f} us per transaction and the scoring function "
            f"{score:,.0f} us when timed alone, {ours:,.0f} us together: "
            f"{ours / cpu_per_row:.0%} of the job's CPU per row. The remaining "
            f"{cpu_per_row - ours:,.0f} us are Flink's side: each hop between the JVM "
            "and Python converts every field of every row (five Python operators, "
            "two of them only compute keys), rows cross two network shuffles, the "
            "pandas function runs in a separate Beam worker process (Arrow, gRPC), "
            "and the JIT compiler and JDBC/Kafka sinks take their share."
        )
    if p1:
        worker = (
            sum(
                s
                for name, s in p1["cpu"]["busiest_threads"].items()
                if name.startswith("python/")
            )
            / p1["rows"]
            * 1e6
        )
        keyby = _thread_micros(p1, "java/_stream_key_by")
        card = _thread_micros(p1, "java/card-history")
        terminal = _thread_micros(p1, "java/terminal-histor")
        source = _thread_micros(p1, "java/Source: transac")
        jit = _thread_micros(p1, "java/C2 Compiler") + _thread_micros(
            p1, "java/C1 Compiler"
        )
        out.append(
            f"- By thread (run p1, us per row): source + validation chain {source:,.0f}, "
            f"the standalone key-by operator {keyby:,.0f}, card history {card:,.0f}, "
            f"terminal history + scoring call + sinks {terminal:,.0f}, the pandas "
            f"worker process {worker:,.0f}, JIT compilers {jit:,.0f}."
        )
        if score:
            out.append(
                f"  The pandas worker burns {worker:,.0f} us per row where "
                f"`ScoreBatch.eval` itself needs {score:,.0f}: "
                f"{max(worker - score, 0):,.0f} us per row go to moving batches "
                "through Beam and Arrow."
            )
    if p1 and p2:
        out.append(
            f"- Parallelism 2 gives {p2['rows_per_second']:,.0f} tx/s against "
            f"{p1['rows_per_second']:,.0f} at 1 "
            f"({p2['rows_per_second'] / p1['rows_per_second']:.2f}x): with two cores "
            "and a single-threaded job already using more than one core (its chains "
            "run in parallel threads), a second slot adds little."
        )
    variants = [r for name, r in runs.items() if name.startswith("p1-bundle")]
    if p1 and variants:
        parts = [
            f"bundle {r['job_settings']['bundle_size']:,} / "
            f"{r['job_settings']['bundle_time_ms']:,} ms / arrow batch "
            f"{r['job_settings']['score_batch_size']:,}: "
            f"{r['rows_per_second']:,.0f} tx/s ({r['rows_per_second'] / p1['rows_per_second']:.2f}x)"
            for r in variants
        ]
        out.append(
            f"- Bundle and batch sizes move little: default "
            f"(5,000 / 200 ms / 5,000) {p1['rows_per_second']:,.0f} tx/s; "
            + "; ".join(parts)
            + ". The cost is per row, not per bundle."
        )
    compact = micros.get("  of which scoring, compact")
    skl = micros.get("  of which scoring, skl2onnx")
    explain = micros.get("  of which explanations, skl2onnx")
    if compact and skl:
        out.append(
            f"- Scoring itself is small: {skl:,.1f} us per row with skl2onnx's graph, "
            f"{compact:,.1f} with the compact graph, at 5,000-row batches; "
            f"explanations of alerting rows add {explain or 0:,.1f} us per row on "
            "average."
        )
    out += ["", "### Recommended changes to `jobs/`", ""] + _recommendations(sections)
    return out


def _recommendations(sections: dict) -> list[str]:
    micros = _micros(sections)
    runs = _runs(sections)
    p1 = runs.get("p1")
    lines = []
    keyby = _thread_micros(p1, "java/_stream_key_by") if p1 else None
    lines.append(
        "1. **Key without Python.** `key_by(lambda row: ...)` adds a Python map "
        "operator per key (`_stream_key_by_map_operator`), which converts every row "
        "to Python and back to compute one field"
        + (f"; the standalone one alone costs {keyby:,.0f} us per row" if keyby else "")
        + ". Emit the key as the first field of a two-field `Types.TUPLE([STRING, "
        "PICKLED_BYTE_ARRAY])` record from `Validate` and from the card operator, or "
        "move validation and keying into a Table API/SQL step (`JSON_VALUE`, "
        "`PARTITION BY`), so that the shuffle happens in the JVM."
    )
    lines.append(
        "2. **Pass one opaque field between Python operators.** Rows of 10 to 30 typed "
        "fields are converted field by field at every JVM/Python crossing "
        "(`CARD_OUT`, `FEATURED`). Between `Validate`, `CardHistory` and "
        "`TerminalHistory`, carry `(key, pickled tuple)` "
        "(`Types.PICKLED_BYTE_ARRAY`), and build the typed `FEATURED` row once, "
        "where the table is made."
    )
    score = micros.get("ScoreBatch.eval, skl2onnx graph")
    compact = micros.get("  of which scoring, compact")
    lines.append(
        "3. **Score inside the terminal operator, in thread mode, with the compact "
        "graph.** The pandas function is the only step in process mode: a second "
        "Python process, Arrow batches over gRPC, the Table API conversion and a "
        "`PythonCalc` in the terminal chain. Scoring one row with the compact graph "
        "costs "
        + (
            f"about {1e6 / _kernel_rate(sections, '1'):,.1f} us"
            if _kernel_rate(sections, "1")
            else "a few us"
        )
        + " (kernel, batch 1)"
        + (
            f", less than the {score:,.0f} us per row of `ScoreBatch.eval` at 5,000-row "
            "batches"
            if score
            else ""
        )
        + "; explain alerting rows in the same place. Keep the JDBC and Kafka sinks "
        "(the table is then made from `FEATURED` + score columns, with no Python "
        "function in it)."
    )
    lines.append(
        "4. **Switch `training/train.py` to the compact graph** "
        "(`training.compact_onnx.write_compact_model`): same scores within 1e-5 and "
        "the same alerts on real rows"
        + (
            f", {compact:,.1f} us per row instead of "
            f"{micros.get('  of which scoring, skl2onnx', 0):,.1f} at 5,000-row batches"
            if compact
            else ""
        )
        + "."
    )
    lines.append(
        "5. **Fewer JSON round trips per row in the keyed operators.** "
        "`CardHistory` builds a dict of the row and the features for the rule "
        "engine and `json.dumps` of hits on every row, `TerminalHistory` "
        "`json.loads` the card hits again; evaluate rules only when a rule uses the "
        "key kind, and pass hits as a tuple until the table."
    )
    return lines


def _kernel_rate(sections: dict, batch: str) -> float | None:
    rates = sections.get("kernel", {}).get("rows_per_second", {})
    return rates.get("compact graph (Scorer)", {}).get(batch)
