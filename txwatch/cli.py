"""The ``txwatch`` command line.

Every subcommand reads the YAML settings (``--config``, default
``conf/txwatch.yaml``) and takes secrets from the environment only:
``TXWATCH_ADMIN_PASSWORD``, ``TXWATCH_WRITER_PASSWORD`` and
``TXWATCH_ANALYST_PASSWORD`` (``make`` loads them from ``.run/secrets.env``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from datetime import date
from pathlib import Path

from txwatch.config import PROJECT_ROOT, Settings, load

DEFAULT_DATA_DIR = PROJECT_ROOT.parent / "shared" / "data" / "handbook"


def _data_dir(args) -> Path:
    return Path(args.data_dir or os.environ.get("TXWATCH_DATA_DIR") or DEFAULT_DATA_DIR)


def _secrets(settings: Settings) -> dict[str, str]:
    pg = settings.postgres
    return {
        "admin": Settings.secret(pg.admin_password_env),
        "writer": Settings.secret(pg.writer_password_env),
        "analyst": Settings.secret(pg.analyst_password_env),
    }


def _publish_models(settings: Settings, model_path: Path) -> None:
    """Make ``model_versions`` follow the registry; a warning when it cannot.

    The running job reads the files only, so a database that is down or a
    password that is not set does not undo the change: the next ``promote
    --sync`` (or any promotion) writes the table again.
    """
    import psycopg2

    from txwatch import catalog, db
    from txwatch.config import ConfigError

    pg = settings.postgres
    try:
        conn = db.connect(pg, pg.writer_user, Settings.secret(pg.writer_password_env))
        try:
            rows = catalog.publish(conn, model_path)
        finally:
            conn.close()
    except (ConfigError, psycopg2.Error) as exc:
        print(f"  model_versions not updated: {exc}".rstrip(), file=sys.stderr)
        return
    print(f"  model_versions: {catalog.describe(rows)}")


def cmd_db(args, settings: Settings) -> int:
    from txwatch import db

    secrets = _secrets(settings)
    pg = settings.postgres
    report = db.migrate(
        pg,
        secrets["admin"],
        {pg.writer_user: secrets["writer"], pg.analyst_user: secrets["analyst"]},
        force_postgres=args.plain_postgres,
    )
    print(f"database {pg.database}: path taken {report.path_taken}")
    print(f"  applied: {', '.join(report.applied) or 'nothing new'}")
    if args.partitions_from:
        created = db.ensure_partitions(
            pg,
            secrets["admin"],
            date.fromisoformat(args.partitions_from),
            date.fromisoformat(args.partitions_to or args.partitions_from),
        )
        print(f"  partitions created: {created}")
    return 0


def cmd_topics(args, settings: Settings) -> int:
    from txwatch import topics

    created = topics.ensure_topics(settings.kafka, reset=args.reset)
    print(f"topics created: {', '.join(created) or 'none (all existed)'}")
    return 0


def cmd_train(args, settings: Settings) -> int:
    from training.dataset import data_files
    from training.train import TrainingConfig, train

    config = TrainingConfig(
        history_from=args.history_from,
        train_from=args.train_from,
        train_to=args.train_to,
        target_alert_rate=args.alert_rate,
        n_estimators=args.trees,
        seed=args.seed,
        label_delay_days=settings.job.label_delay_days,
        graph=args.graph,
        supervised=args.supervised,
    )
    model_dir = (
        Path(args.model_dir)
        if args.model_dir
        else settings.path(settings.job.model_dir)
    )
    result = train(data_files(_data_dir(args)), model_dir, config)
    print(f"model {result.metadata.version} written to {model_dir}")
    for name, value in result.metrics.items():
        print(f"  {name:<34}{value:.6g}")
    if args.register:
        from udfs import registry

        version = registry.register(args.register, model_dir)
        print(f"  registered as {version} in {args.register}")
    if args.track:
        from training.tracking import log_training_run

        run_id, number = log_training_run(
            result, config, tracking_uri=args.tracking_uri
        )
        print(f"  MLflow run {run_id}, registered version {number}")
    if args.register and args.promote:
        if args.track:  # MLflow's alias first, then the registry's pointer
            from training.aliases import ModelAliases

            ModelAliases(args.register, args.tracking_uri).promote(
                version, args.promote
            )
        else:
            registry.promote(args.register, version, args.promote)
        print(f"  {args.promote} is now {version}")
    if args.register:
        _publish_models(settings, Path(args.register))
    return 0


def cmd_promote(args, settings: Settings) -> int:
    from udfs import registry

    root = Path(args.registry) if args.registry else settings.path(".run/registry")
    chosen = [bool(args.version), args.clear, args.sync]
    if sum(chosen) != 1:
        print(
            "error: give a VERSION, or --clear, or --sync (one of them)",
            file=sys.stderr,
        )
        return 2
    if args.file_only:
        before = registry.current(root, args.alias)
        if args.clear:
            registry.clear(root, args.alias)
        elif args.version:
            registry.promote(root, args.version, args.alias)
        else:
            print("error: --sync reads MLflow; drop --file-only", file=sys.stderr)
            return 2
        after = registry.current(root, args.alias)
        print(f"{args.alias}: {before or 'none'} -> {after or 'none'} (in {root})")
        print("  MLflow not changed: a later `txwatch promote --sync` overrides this")
        _publish_models(settings, root)
        return 0

    from training.aliases import AliasError, ModelAliases

    aliases = ModelAliases(root, args.tracking_uri, args.model_name)
    try:
        if args.sync:
            pointers = aliases.sync()
            print(f"registry {root} now follows MLflow model {args.model_name}:")
        else:
            change = (
                aliases.clear(args.alias)
                if args.clear
                else aliases.promote(args.version, args.alias)
            )
            number = f" (MLflow version {change.mlflow_version})"
            print(
                f"{change.alias}: {change.before or 'none'} -> "
                f"{change.after or 'none'}{number if change.after else ''}"
            )
            pointers = change.pointers
    except (AliasError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for alias, version in pointers.items():
        print(f"  {alias:<11}{version or 'none'}")
    _publish_models(settings, root)
    return 0


def cmd_retrain(args, settings: Settings) -> int:
    import tempfile

    from training.dataset import data_files
    from training.retrain import RetrainConfig, retrain
    from udfs import registry

    root = Path(args.registry) if args.registry else settings.path(".run/registry")
    config = RetrainConfig(
        as_of=args.as_of or date.today().isoformat(),
        train_days=args.train_days,
        eval_days=args.eval_days,
        warmup_days=args.warmup_days,
        label_delay_days=settings.job.label_delay_days,
        n_estimators=args.trees,
        target_alert_rate=args.alert_rate,
        seed=args.seed,
    )
    aliases = None
    if not args.no_track:
        from training.aliases import ModelAliases

        aliases = ModelAliases(root, args.tracking_uri, args.model_name)
        aliases.sync()  # the champion to beat is MLflow's
    champion = registry.current(root)
    champion_dir = registry.version_dir(root, champion) if champion else None

    def say(text: str) -> None:
        print(f"== {text}", flush=True)

    w = config.windows
    say(
        f"retraining as of {config.as_of}: train {w['train_from']} .. "
        f"{w['eval_from']}, evaluate {w['eval_from']} .. {w['eval_to']} "
        f"(labels known by then), champion {champion or 'none'}"
    )
    with tempfile.TemporaryDirectory() as staging:
        try:
            report = retrain(
                data_files(_data_dir(args)),
                Path(staging) / "model",
                config,
                champion_dir,
                progress=not args.quiet,
                say=say,
            )
        except (ValueError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        say(f"registering {report.version} as challenger")
        version = registry.register(root, report.result.model_dir)
        if aliases is not None:
            from training.tracking import log_training_run

            run_id, number = log_training_run(
                report.result,
                config.training_config(),
                tracking_uri=args.tracking_uri,
                register_as=args.model_name,
                training_matrix=report.training_matrix,
                extra_metrics=report.mlflow_metrics(),
            )
            aliases.promote(version, "challenger")
            print(f"   MLflow run {run_id}, {args.model_name} version {number}")
        else:
            registry.promote(root, version, "challenger")
    print(f"   registry {root}: champion {champion or 'none'}, challenger {version}")
    _publish_models(settings, root)

    print()
    print(report.render())
    document = json.dumps(report.as_dict(), indent=2, default=float)
    if args.json_out:
        Path(args.json_out).write_text(document)
        print(f"\n(evaluation written to {args.json_out})")
    else:
        print(document)
    return 0


def cmd_replay(args, settings: Settings) -> int:
    from training.dataset import data_files, load_handbook
    from txwatch.replay import make_producer, replay

    frame = load_handbook(data_files(_data_dir(args)), args.start, args.end)
    if args.limit:
        frame = frame.head(args.limit)
    producer = make_producer(settings.kafka.bootstrap_servers)
    report = replay(
        producer,
        frame,
        settings.kafka.topics.transactions,
        None if args.no_feedback else settings.kafka.topics.feedback,
        settings.job.label_delay_days,
        rate=args.rate,
    )
    producer.close()
    print(
        f"sent {report.transactions:,} transactions and {report.feedback:,} labels "
        f"in {report.seconds:.1f}s ({report.rate:,.0f}/s)"
    )
    return 0


def cmd_job(args, settings: Settings) -> int:
    from jobs.pipeline import main as job_main

    return job_main(args.job_args)


def cmd_demo(args, settings: Settings) -> int:
    from training.dataset import data_files
    from txwatch.demo import DemoPlan, run_demo

    plan = DemoPlan(
        data_files=data_files(_data_dir(args)),
        parallelism=args.parallelism,
        retrain=args.retrain,
    )
    summary = run_demo(settings, plan, _secrets(settings))
    print(summary.render())
    out = PROJECT_ROOT / ".run" / "demo-summary.json"
    out.write_text(json.dumps(summary.as_dict(), indent=2))
    print(f"\n(summary also written to {out.relative_to(PROJECT_ROOT)})")
    consistent = summary.accounted and summary.alerts_kafka == summary.alerts_table
    return 0 if consistent else 1


def cmd_summary(args, settings: Settings) -> int:
    from txwatch import db
    from txwatch.summary import collect

    conn = db.connect(
        settings.postgres, settings.postgres.admin_user, _secrets(settings)["admin"]
    )
    print(collect(settings, conn).render())
    conn.close()
    return 0


def _passthrough(module: str, function: str):
    def run(args, settings) -> int:
        import importlib

        return getattr(importlib.import_module(module), function)(args.rest)

    run.passthrough = True
    return run


def build_parser() -> argparse.ArgumentParser:
    from udfs.scoring import GRAPHS

    parser = argparse.ArgumentParser(
        prog="txwatch", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--config", help="settings YAML (default conf/txwatch.yaml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("db", help="apply migrations and create partitions")
    p.add_argument("--partitions-from", help="first day (YYYY-MM-DD) to partition")
    p.add_argument("--partitions-to", help="last day (YYYY-MM-DD) to partition")
    p.add_argument(
        "--plain-postgres",
        action="store_true",
        help="take the plain PostgreSQL path even if TimescaleDB is available",
    )
    p.set_defaults(run=cmd_db)

    p = sub.add_parser("topics", help="create the Kafka topics")
    p.add_argument("--reset", action="store_true", help="delete and recreate them")
    p.set_defaults(run=cmd_topics)

    p = sub.add_parser("train", help="train, export and check a model")
    p.add_argument("--data-dir")
    p.add_argument("--model-dir")
    p.add_argument("--history-from", default="2018-04-01")
    p.add_argument("--train-from", default="2018-05-01")
    p.add_argument("--train-to", default="2018-07-01", help="exclusive")
    p.add_argument("--alert-rate", type=float, default=0.005)
    p.add_argument("--trees", type=int, default=100)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--graph",
        choices=GRAPHS,
        default=GRAPHS[0],
        help="ONNX form of the forest: one tree-ensemble operator, or skl2onnx's",
    )
    p.add_argument(
        "--no-supervised",
        dest="supervised",
        action="store_false",
        help="no supervised stage: the forest's anomaly score decides alerts",
    )
    p.add_argument(
        "--register", metavar="REGISTRY", help="copy the model into a registry"
    )
    p.add_argument(
        "--promote",
        choices=("champion", "challenger"),
        help="with --register: point this alias at the new version",
    )
    p.add_argument("--track", action="store_true", help="log the run to MLflow")
    p.add_argument("--tracking-uri")
    p.set_defaults(run=cmd_train)

    p = sub.add_parser(
        "promote",
        help="move the champion or challenger alias: MLflow, then the job's registry",
    )
    p.add_argument("version", nargs="?", help="model version or MLflow number")
    p.add_argument("--alias", default="champion", choices=("champion", "challenger"))
    p.add_argument(
        "--clear", action="store_true", help="remove the alias (the challenger)"
    )
    p.add_argument(
        "--sync",
        action="store_true",
        help="rewrite the registry's pointers from MLflow's aliases",
    )
    p.add_argument("--registry", help="registry folder (default .run/registry)")
    p.add_argument("--tracking-uri", help="MLflow store (default .run/mlflow.db)")
    p.add_argument("--model-name", default="txwatch-iforest")
    p.add_argument(
        "--file-only",
        action="store_true",
        help="move only the registry's pointer, for registries without MLflow",
    )
    p.set_defaults(run=cmd_promote)

    p = sub.add_parser(
        "retrain",
        help="train on recent days, grade against the champion, register as challenger",
    )
    p.add_argument("--data-dir")
    p.add_argument(
        "--as-of", help="the day retraining runs (YYYY-MM-DD, default today, UTC)"
    )
    p.add_argument("--train-days", type=int, default=28)
    p.add_argument("--eval-days", type=int, default=7)
    p.add_argument(
        "--warmup-days", type=int, default=30, help="history before training"
    )
    p.add_argument("--alert-rate", type=float, default=0.005)
    p.add_argument("--trees", type=int, default=100)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--registry", help="registry folder (default .run/registry)")
    p.add_argument("--tracking-uri", help="MLflow store (default .run/mlflow.db)")
    p.add_argument("--model-name", default="txwatch-iforest")
    p.add_argument(
        "--no-track",
        action="store_true",
        help="file registry only: no MLflow run, version or alias",
    )
    p.add_argument("--json-out", help="write the evaluation JSON here, not stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=cmd_retrain)

    p = sub.add_parser("replay", help="replay handbook CSV rows into Kafka")
    p.add_argument("--data-dir")
    p.add_argument("--from", dest="start", required=True, help="first day, inclusive")
    p.add_argument("--to", dest="end", required=True, help="last day, exclusive")
    p.add_argument(
        "--rate", type=float, help="messages a second (default: as fast as possible)"
    )
    p.add_argument("--limit", type=int)
    p.add_argument("--no-feedback", action="store_true")
    p.set_defaults(run=cmd_replay)

    p = sub.add_parser(
        "job", help="run the streaming job (options: txwatch job -- --help)"
    )
    p.add_argument("job_args", nargs=argparse.REMAINDER)
    p.set_defaults(run=cmd_job)

    p = sub.add_parser("demo", help="the end-to-end demo on the handbook data")
    p.add_argument("--data-dir")
    p.add_argument("--parallelism", type=int, default=1)
    p.add_argument("--retrain", action="store_true")
    p.set_defaults(run=cmd_demo)

    p = sub.add_parser("summary", help="counts of the current topics and tables")
    p.set_defaults(run=cmd_summary)

    for name, module, function, text in (
        (
            "evaluate",
            "training.evaluate",
            "main",
            "offline evaluation on the handbook protocol",
        ),
        ("report", "txwatch.report", "main_report", "HTML report from the database"),
        ("query", "txwatch.queries", "main_queries", "run a ready analyst query"),
        ("rules", "training.backtest", "main", "rule tools: backtest"),
        (
            "drift",
            "txwatch.drift",
            "main",
            "hourly PSI of features and score into drift_metrics",
        ),
    ):
        p = sub.add_parser(name, help=text, add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(run=_passthrough(module, function))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Subcommands with their own parsers take their options as they come;
    # argparse leaves leading options of a remainder unmatched.
    args, extra = parser.parse_known_args(argv)
    if getattr(args.run, "passthrough", False):
        args.rest = extra + args.rest
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command in ("train", "demo", "retrain"):
        logging.getLogger("training").setLevel(logging.INFO)
    settings = load(args.config)
    try:
        return args.run(args, settings)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
