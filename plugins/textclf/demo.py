"""The ``demo`` command: run the daily DAG for one day on the embedded warehouse.

It sets up an Airflow home and an embedded warehouse under ``$TEXTCLF_HOME`` (default
``./.textclf``) and loads a data file into the source table: the bundled demo reviews unless
``--data`` names another. Then it runs the ``textclf_daily`` DAG for one day with ``dag.test()``
and prints where the predictions and the report are.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from textclf.config import CONFIG_ENV_VAR, HOME_ENV_VAR, PipelineConfig, load_config, textclf_home
from textclf.run_day import parse_day

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
DEMO_DATA = PACKAGE_DIR / "demo_data" / "reviews.csv"
REPOSITORY_DIR = PACKAGE_DIR.parents[1]
DAG_FILE = REPOSITORY_DIR / "dags" / "textclf_daily.py"
DAG_ID = "textclf_daily"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        type=Path,
        default=DEMO_DATA,
        help="Parquet, CSV/TSV or JSON lines file of reviews to load (default: the bundled demo reviews)",
    )
    parser.add_argument("--date", help="day to process, YYYY-MM-DD (default: the last day in the data)")
    parser.add_argument("--home", type=Path, help=f"working folder (default: ${HOME_ENV_VAR} or ./.textclf)")
    parser.add_argument("--skip-load", action="store_true", help="keep the source table as it is; load nothing")


def run_command(args: argparse.Namespace) -> int:
    started = time.monotonic()
    home = prepare_environment(args.home)
    config = load_config()
    data = Path(args.data).expanduser().resolve()

    from textclf.warehouse import open_embedded

    if not args.skip_load:
        from textclf.loader import load_file

        load_started = time.monotonic()
        with open_embedded() as warehouse:
            days = load_file(
                data, warehouse=warehouse, table=config.source, partition_column=config.source_date_column
            )
            # The demo's source table then contains exactly the loaded file, so rows of an earlier demo
            # on other data never join the training examples. A failed load above changes nothing.
            warehouse.execute(
                f"DELETE FROM {config.source.sql} WHERE {config.source_date_column} NOT IN UNNEST(@loaded_days)",
                {"loaded_days": sorted(days)},
            )
        print(
            f"Loaded {sum(days.values())} rows over {len(days)} days from {data} into {config.source} "
            f"in {time.monotonic() - load_started:.1f} s"
        )

    with open_embedded() as warehouse:
        if args.date:
            run_day = parse_day(args.date, what="--date")
        else:
            latest = warehouse.query(
                f"SELECT MAX({config.source_date_column}) AS latest FROM {config.source.sql}"
            ).to_pylist()[0]["latest"]
            if latest is None:
                print(f"error: {config.source} has no rows; load data with --data FILE", file=sys.stderr)
                return 1
            run_day = latest

    config = cover_run_day(config, run_day, home)
    print(f"Running DAG {DAG_ID} for {run_day.isoformat()} (Airflow home {os.environ['AIRFLOW_HOME']})")
    task_states, trained = run_dag(run_day)
    return print_summary(config, run_day, task_states, trained, home, time.monotonic() - started)


def prepare_environment(home: Path | None) -> Path:
    """Point Airflow and textclf at the demo folder and create Airflow's metadata database."""
    home = (home or textclf_home()).expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    os.environ[HOME_ENV_VAR] = str(home)
    os.environ.setdefault("AIRFLOW_HOME", str(home / "airflow"))
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAG_FILE.parent)
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
    os.environ.setdefault(
        "AIRFLOW_CONN_TEXTCLF_WAREHOUSE",
        json.dumps({"conn_type": "duckdb", "host": str(home / "warehouse.duckdb")}),
    )
    if CONFIG_ENV_VAR in os.environ:
        log.info("Using the configuration in %s", os.environ[CONFIG_ENV_VAR])

    # The subprocess keeps Airflow's migration logs out of the demo's output.
    migrate = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], capture_output=True, text=True, env=os.environ
    )
    if migrate.returncode != 0:
        raise RuntimeError(f"`airflow db migrate` failed in {os.environ['AIRFLOW_HOME']}:\n{migrate.stderr[-3000:]}")
    return home


def cover_run_day(config: PipelineConfig, run_day: dt.date, home: Path) -> PipelineConfig:
    """Move the DAG's start date back to ``run_day`` when it starts later, so the run has tasks.

    Airflow creates no task instances for a run dated before its DAG's start date. The moved start
    date is written to a configuration file in ``home`` that ``TEXTCLF_CONFIG`` then names.
    """
    if dt.date.fromisoformat(config.start_date) <= run_day:
        return config
    values = {**config.to_dict(), "start_date": run_day.isoformat()}
    path = home / "demo-config.json"
    path.write_text(json.dumps(values, indent=2), encoding="utf-8")
    os.environ[CONFIG_ENV_VAR] = str(path)
    log.info("Moved the DAG's start date to %s for this run; configuration in %s", run_day, path)
    return load_config()


def run_dag(run_day: dt.date) -> tuple[dict[str, str], dict]:
    """Run the DAG for ``run_day`` with ``dag.test()``; return each task's final state and the train task's XCom."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("textclf_daily_dag", DAG_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag = module.dag

    logical_date = dt.datetime.combine(run_day, dt.time(), dt.timezone.utc)
    dag_run = dag.test(logical_date=logical_date, run_conf={"run_date": run_day.isoformat()})
    task_instances = {ti.task_id: ti for ti in dag_run.get_task_instances()}
    states = {task.task_id: str(getattr(task_instances.get(task.task_id), "state", "not run")) for task in dag.tasks}
    train = task_instances.get("train_model")
    trained = None
    if train is not None and states["train_model"] == "success":
        trained = train.xcom_pull(task_ids="train_model")
    return states, trained or {}


def print_summary(
    config: PipelineConfig,
    run_day: dt.date,
    task_states: dict[str, str],
    trained: dict,
    home: Path,
    seconds: float,
) -> int:
    from textclf.store import get_model_store
    from textclf.warehouse import open_embedded

    print()
    print(f"textclf demo for {run_day.isoformat()}")
    for task_id, state in task_states.items():
        print(f"  task {task_id:<18} {state}")
    if all(state == "skipped" for state in task_states.values()):
        print(
            f"error: {config.source} has no rows for {config.source_date_column} = {run_day.isoformat()}, so the "
            f"run was skipped. Pick a day that has data with --date.",
            file=sys.stderr,
        )
        return 1
    failed = [task_id for task_id, state in task_states.items() if state != "success"]

    with open_embedded() as warehouse:
        if warehouse.table_exists(config.report):
            rows = warehouse.query(
                f"SELECT * FROM {config.report.sql} WHERE {config.result_date_column} = @run_date",
                {"run_date": run_day},
            ).to_pylist()
        else:
            rows = []
        if warehouse.table_exists(config.durations):
            durations = warehouse.query(
                f"SELECT task_id, duration_seconds FROM {config.durations.sql} "
                f"WHERE {config.result_date_column} = @run_date ORDER BY task_id",
                {"run_date": run_day},
            ).to_pylist()
        else:
            durations = []

    database = home / "warehouse.duckdb"
    if rows:
        report = rows[0]
        print(f"  rows predicted      {report['rows_predicted']} of {report['source_rows']} source rows")
        for entry in report["class_shares"] or []:
            print(f"  share {entry['label']:<13} {100 * entry['share']:.1f} %")
        if report["accuracy"] is not None:
            print(f"  accuracy            {100 * report['accuracy']:.1f} % on {report['labelled_rows']} labelled rows")
        print(f"  model version       {report['model_version']}")
    if trained.get("training_examples") is not None:
        print(f"  training examples   {trained['training_examples']} before {run_day.isoformat()}")
    task_seconds = {row["task_id"]: row["duration_seconds"] for row in durations}
    for task_id in task_states:
        if task_id in task_seconds:
            print(f"  seconds {task_id:<18} {task_seconds[task_id]:.1f}")
    print(
        f"  predictions         {config.predictions} (DuckDB: {database}, table "
        f"{config.dataset}.{config.predictions_table}, {config.result_date_column} = '{run_day.isoformat()}')"
    )
    store = get_model_store(config.resolved_store_uri)
    print(f"  report              {Path(store.root) / 'reports' / run_day.isoformat() / 'report.md'}")
    print(f"  wall time           {seconds:.1f} s")
    if failed:
        print(f"error: tasks {', '.join(failed)} did not succeed; see the log above", file=sys.stderr)
        return 1
    return 0
