"""``bench/results.md``: the results of one run as readable tables and findings."""

from __future__ import annotations

TARGETS = {
    "e2e_rows_per_second": 25_000,
    "p99_ms_at_5k": 500,
    "times_sklearn_peer": 20,
    "kernel_rows_per_second": 500_000,
}


def render(results: dict) -> str:
    sections = results.get("sections", {})
    lines = _header(results.get("meta", {}))
    lines += _targets(sections)
    for title, part in (
        ("1. Scoring kernel (one core)", _kernel),
        ("2. Peers: plain Kafka consumers, record by record", _peers),
        ("3. End to end: the job, Kafka in, Kafka and PostgreSQL out", _endtoend),
        ("4. Latency at fixed input rates", _latency),
        ("5. Feature step against state size (one core)", _state),
        ("6. The job against the number of cards in state", _jobstate),
        ("7. Where the job's time goes", _profile),
    ):
        lines += ["", f"## {title}", ""]
        key = part.__name__.lstrip("_")
        section = sections.get("endtoend" if key == "profile" else key)
        if key == "profile":
            lines += part(sections)
        elif section is None:
            lines.append("Not run.")
        elif "error" in section:
            lines.append(f"Failed: `{section['error']}`")
        else:
            lines += part(section, sections)
    return "\n".join(lines) + "\n"


# -- helpers ---------------------------------------------------------------------


def _n(value, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def _steady_micros(run: dict) -> float | None:
    steady = run.get("cpu_steady") or {}
    rows = steady.get("rows")
    return steady["total"] / rows * 1e6 if rows else None


def _cores_busy(run: dict) -> float | None:
    steady = run.get("cpu_steady") or {}
    return steady["total"] / steady["seconds"] if steady.get("seconds") else None


def _other_cores(run: dict) -> float | None:
    """Cores busy outside the job (broker, database, neighbours) in its window."""
    steady = run.get("cpu_steady") or {}
    busy, job = steady.get("machine_busy_cores"), _cores_busy(run)
    return max(busy - job, 0.0) if busy is not None and job is not None else None


def _e2e_runs(sections: dict) -> list[dict]:
    return sections.get("endtoend", {}).get("runs", []) or []


def _run(sections: dict, variant: str) -> dict | None:
    return next((r for r in _e2e_runs(sections) if r["variant"] == variant), None)


def _best_e2e(sections: dict) -> dict | None:
    plain = [r for r in _e2e_runs(sections) if r["variant"] in ("p1", "p2")]
    return max(plain, key=lambda r: r["rows_per_second"]) if plain else None


def _peer_rate(sections: dict, name: str) -> float | None:
    peer = sections.get("peers", {}).get(name)
    return peer["rows_per_second"] if isinstance(peer, dict) else None


def _latency_run(sections: dict, rate: float) -> dict | None:
    runs = sections.get("latency", {}).get("runs", []) or []
    return next((r for r in runs if r["rate"] == rate), None)


# -- parts -------------------------------------------------------------------------


def _header(meta: dict) -> list[str]:
    model = meta.get("model", {})
    mode = "quick (smoke test sizes)" if meta.get("quick") else "full"
    load = meta.get("load_average_at_start") or ()
    return [
        "# txwatch benchmark results",
        "",
        f"Run {meta.get('started_at', '?')}, {mode}, "
        f"{meta.get('seconds', '?')} s in all. "
        f"{meta.get('cpus', '?')} CPUs, shared with other work on the machine "
        f"(1-minute load {_n(load[0], 2) if load else '?'} at the start): "
        "compare figures within this run, not across machines. "
        f"Python {meta.get('python', '?')}, "
        f"onnxruntime {meta.get('onnxruntime', '?')}, "
        f"scikit-learn {meta.get('scikit_learn', '?')}.",
        "",
        f"Model: `{model.get('version', '?')}`, Isolation Forest of "
        f"{model.get('trees', '?')} trees on {len(model.get('features', []))} features "
        f"({', '.join(model.get('features', []))}){_stage(model)}, trained by "
        "`training.train` on handbook days 2018-04-08 .. 2018-04-21. Stream: "
        "handbook transactions from 2018-07-01 on, in the JSON input contract, with "
        "fraud labels as feedback.",
    ]


def _stage(model: dict) -> str:
    stage = model.get("supervised")
    if not stage:
        return ""
    return (
        f", and a supervised stage on {stage['inputs']} inputs deciding alerts "
        f"(labels known by {stage['labelled_to']}, {stage['frauds']:,} frauds)"
    )


def _targets(sections: dict) -> list[str]:
    rows = []
    best = _best_e2e(sections)
    e2e = best["rows_per_second"] if best else None
    rows.append(
        _target_row(
            "end to end throughput",
            f">= {_n(TARGETS['e2e_rows_per_second'])} tx/s",
            f"{_n(e2e)} tx/s (parallelism {best['parallelism']})" if best else "-",
            e2e is not None and e2e >= TARGETS["e2e_rows_per_second"],
        )
    )
    at5k = _latency_run(sections, 5_000.0)
    p99 = at5k["latency_ms"]["alert visible"]["p99"] if at5k else None
    row_p99 = at5k["latency_ms"]["row"]["p99"] if at5k else None
    rows.append(
        _target_row(
            "p99 latency at 5,000 tx/s",
            f"< {TARGETS['p99_ms_at_5k']} ms",
            f"alert visible {_n(p99)} ms, row {_n(row_p99)} ms" if at5k else "-",
            p99 is not None and p99 < TARGETS["p99_ms_at_5k"],
        )
    )
    peer = _peer_rate(sections, "sklearn")
    ratio = e2e / peer if e2e and peer else None
    rows.append(
        _target_row(
            "job vs per-record scikit-learn peer",
            f">= {TARGETS['times_sklearn_peer']}x",
            f"{_n(ratio, 1)}x" if ratio else "-",
            ratio is not None and ratio >= TARGETS["times_sklearn_peer"],
        )
    )
    kernel = sections.get("kernel", {})
    compact = kernel.get("rows_per_second", {}).get("compact graph (Scorer)", {})
    parity = kernel.get("parity", {}).get("compact graph (Scorer)", {})
    best_kernel = max(compact.values()) if compact else None
    exact = (
        parity.get("max_abs_diff", 1.0) <= 1e-5
        and parity.get("flagged_differently") == 0
    )
    rows.append(
        _target_row(
            "scoring kernel at parity, one core",
            f">= {_n(TARGETS['kernel_rows_per_second'])} rows/s",
            f"{_n(best_kernel)} rows/s (compact graph, best batch; parity "
            f"{'held' if exact else 'FAILED'})"
            if best_kernel
            else "-",
            best_kernel is not None
            and best_kernel >= TARGETS["kernel_rows_per_second"]
            and exact,
        )
    )
    return ["", "## Targets", ""] + _table(["target", "stated", "reached", "met"], rows)


def _target_row(name, stated, reached, met) -> list[str]:
    return [name, stated, reached, "yes" if met else "**no**"]


def _kernel(section: dict, sections: dict) -> list[str]:
    batches = [str(b) for b in section["batches"]]
    rows = [
        [method] + [_n(rates.get(b)) for b in batches]
        for method, rates in section["rows_per_second"].items()
    ]
    lines = ["Rows a second, median of three timed windows, real feature rows."]
    lines += [""] + _table(["method \\ batch"] + [_n(int(b)) for b in batches], rows)
    lines.append("")
    for name, check in section["parity"].items():
        lines.append(
            f"- parity of the {name} with scikit-learn on {_n(check['rows'])} rows: "
            f"largest score difference {check['max_abs_diff']:.1e}, "
            f"{check['flagged_differently']} rows flagged differently "
            f"({_n(check['flagged'])} flagged)."
        )
    for name, ms in section.get("reasons_ms_per_row", {}).items():
        lines.append(f"- reasons of an alert (exact SHAP), {name}: {ms:.2f} ms a row.")
    return lines


def _peers(section: dict, sections: dict) -> list[str]:
    ours = {
        r["parallelism"]: r["rows_per_second"]
        for r in _e2e_runs(sections)
        if r["variant"] in ("p1", "p2")
    }
    rows = []
    for name, label in (
        ("sklearn", "scikit-learn, 1-row score_samples"),
        ("river", "River HalfSpaceTrees, learn and score"),
    ):
        peer = section.get(name)
        if not isinstance(peer, dict):
            continue
        rate = peer["rows_per_second"]
        rows.append(
            [
                label,
                _n(peer["records"]),
                _n(peer["seconds"], 1),
                _n(rate),
                _n(ours[1] / rate, 1) + "x" if 1 in ours else "-",
                _n(ours[2] / rate, 1) + "x" if 2 in ours else "-",
            ]
        )
    return [
        "Same transactions, same broker; each peer validates, computes the features "
        "with `udfs.features`, scores and produces alerts, one record at a time, in "
        "one process. They skip what the job also does: feedback, rules, "
        "PostgreSQL, exactly-once.",
        "",
    ] + _table(
        ["peer", "records", "seconds", "records/s", "job p1 / peer", "job p2 / peer"],
        rows,
    )


def _endtoend(section: dict, sections: dict) -> list[str]:
    rows = []
    for r in section["runs"]:
        s = r["job_settings"]
        rows.append(
            [
                r["variant"],
                str(r["parallelism"]),
                f"{_n(s['bundle_size'])} / {_n(s['bundle_time_ms'])} ms / "
                f"{_n(s['score_batch_size'])}",
                f"{_n(r['rows'])} of {_n(r['expected_rows'])}",
                _n(r["rows_per_second"]),
                _n(r["wall_seconds"]),
                _n(r["wall_rows_per_second"]),
                _n(r["first_row_after_seconds"]),
                _n(_steady_micros(r)),
                f"{_n(_cores_busy(r), 2)} / {_n(_other_cores(r), 2)}",
                f"{_n(r['alerts_table'])} / {_n(r['alerts_kafka'])}",
            ]
        )
    return [
        "Bounded runs over the pre-loaded transactions. rows/s: rows written after "
        "the first JDBC flush divided by the time from the first flush to the last "
        "(`scored_at`). Wall: process start to exit, start-up and final checkpoint "
        "included. CPU per row: every process and thread of the job, user + system, "
        "between the first and the last flush, divided by the rows written then; "
        "cores busy: that CPU time divided by the same span (job), and the rest of "
        "the machine's busy CPU over it (others: Kafka, PostgreSQL and any "
        "neighbour).",
        "",
    ] + _table(
        [
            "run",
            "parallelism",
            "bundle size / bundle time / arrow batch",
            "rows",
            "rows/s",
            "wall s",
            "rows/s incl. start-up",
            "first row after s",
            "CPU us per row",
            "cores busy: job / others",
            "alerts PostgreSQL / Kafka",
        ],
        rows,
    )


def _latency(section: dict, sections: dict) -> list[str]:
    rows = []
    for r in section["runs"]:
        lat = r["latency_ms"]
        rows.append(
            [
                _n(r["rate"]),
                _n(r["achieved_rate"]),
                "yes" if r["kept_up"] else "**no**",
                _n(r.get("load_average"), 1),
                _n(r["alerts"]),
                *[
                    " / ".join(_n(lat[kind][p]) for p in ("p50", "p95", "p99"))
                    for kind in ("alert record", "alert visible", "row")
                ],
            ]
        )
    settings = section["runs"][0]["job_settings"] if section["runs"] else {}
    parallelism = section["runs"][0]["parallelism"] if section["runs"] else "?"
    return [
        f"The job unbounded at parallelism {parallelism}, produced to at a fixed rate "
        "after a warm-up; latency from the input's Kafka timestamp, in ms, "
        "p50 / p95 / p99. Checkpoint interval set to "
        f"{_n(settings.get('checkpoint_interval_ms'))} ms for these runs (10,000 ms by "
        "default). *alert record*: the alert's Kafka timestamp, taken when the sink "
        "sends it inside an open Kafka transaction. *alert visible*: when a "
        "`read_committed` consumer got it, which waits for the checkpoint that commits "
        "the transaction, so at the default interval it grows by up to 10 s. *row*: "
        "`scored_at` in PostgreSQL (JDBC flushes every "
        f"{_n(settings.get('jdbc_flush_interval_ms'))} ms or "
        f"{_n(settings.get('jdbc_batch_rows'))} rows).",
        "",
    ] + _table(
        [
            "input tx/s",
            "achieved",
            "kept up",
            "1-min load at the end",
            "alerts",
            "alert record",
            "alert visible",
            "row in PostgreSQL",
        ],
        rows,
    )


def _state(section: dict, sections: dict) -> list[str]:
    rows = [
        [_n(int(size)), _n(rates["pickled"]), _n(rates["objects"])]
        for size, rates in section["rows_per_second"].items()
    ]
    return [
        f"{_n(section['updates_per_size'])} transactions on cards drawn at random, "
        f"{_n(section['terminals'])} terminals; median of three thirds.",
        "",
    ] + _table(
        [
            "cards in state",
            "tx/s, state pickled (as the job)",
            "tx/s, state as objects",
        ],
        rows,
    )


def _jobstate(section: dict, sections: dict) -> list[str]:
    from bench.jobstate import PARTS

    rows = [
        [
            _n(run["cards"]),
            run["state_backend"],
            _n(run["rows_per_second"]),
            _n(run["cpu_micros_per_row"]),
            *[_n(run["cpu_micros_per_row_by_part"].get(part)) for part in PARTS],
            f"{run['alert_share']:.2%}",
            _n(run["max_rss_bytes"] / 2**30, 2),
            _n(run["max_checkpoint_dir_bytes"] / 2**20),
            _n(run["wall_seconds"]),
        ]
        for run in section["runs"]
    ]
    return [
        "The job at parallelism 1, bounded, on a synthetic stream: one transaction "
        f"opens each card, then {_n(section['measured_per_size'])} transactions on "
        "cards drawn at random; each card spends around its own mean amount at a "
        f"few terminals of its own, of {_n(section['terminals'])}. Rate and CPU "
        "count those measured transactions only, all cards being in state. Memory: "
        "the largest resident size of the job's processes; checkpoints: the largest "
        "size of its checkpoint directory; both sampled every 5 s. Parts: CPU of "
        "their threads; snapshots are the asynchronous checkpoint writers and "
        "RocksDB's own threads. Alerted: the measured rows' alert share, which "
        "sets what the scoring worker spends on reasons.",
        "",
    ] + _table(
        [
            "cards in state",
            "state backend",
            "tx/s",
            "CPU us per row",
            *[f"of which {part}" for part in PARTS],
            "alerted",
            "memory GiB",
            "checkpoints MiB",
            "wall s",
        ],
        rows,
    )


def _profile(sections: dict) -> list[str]:
    from bench.findings import findings

    lines = []
    pieces = sections.get("pieces", {})
    micros = pieces.get("micros_per_transaction", {})
    if micros:
        lines += ["Python work per transaction, each piece alone on one core:", ""]
        lines += _table(
            ["piece", "us per transaction"],
            [
                [name.replace("  ", "&nbsp;&nbsp;"), _n(v, 1)]
                for name, v in micros.items()
            ],
        )
        for name, note in pieces.get("notes", {}).items():
            lines.append(f"- {name}: {note}")
    p1 = _run(sections, "p1")
    steady = (p1 or {}).get("cpu_steady") or {}
    if steady.get("rows"):
        lines += [
            "",
            f"CPU of the job by thread, run p1, between its first and last flush "
            f"({_n(steady['seconds'], 1)} s, {_n(steady['rows'])} rows; the whole run "
            f"used {_n(p1['cpu']['total'], 1)} s of CPU):",
            "",
        ]
        lines += _table(
            ["process/thread (names cut at 15 characters)", "CPU s", "us per row"],
            [
                [name, _n(seconds, 1), _n(seconds / steady["rows"] * 1e6)]
                for name, seconds in steady["busiest_threads"].items()
            ],
        )
    lines += ["", "### Findings", ""] + findings(sections)
    return lines
