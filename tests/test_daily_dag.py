"""The whole daily DAG, run for real with dag.test() on the embedded warehouse."""

from __future__ import annotations

import datetime as dt
import importlib.util
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPOSITORY_DIR

DAG_FILE = REPOSITORY_DIR / "dags" / "textclf_daily.py"
DEMO_DATA = REPOSITORY_DIR / "plugins" / "textclf" / "demo_data" / "reviews.csv"
LAST_DAY = dt.date(2026, 11, 30)
EMPTY_DAY = dt.date(2026, 12, 3)
TASK_IDS = ["check_source_data", "train_model", "import_model", "predict", "report"]


@pytest.fixture(scope="module")
def airflow_db():
    completed = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], capture_output=True, text=True, env=os.environ
    )
    assert completed.returncode == 0, completed.stderr[-2000:]


@pytest.fixture(scope="module")
def pipeline(airflow_db, tmp_path_factory):
    """A textclf home with the demo reviews loaded, and a function that runs the DAG for a day."""
    home = tmp_path_factory.mktemp("pipeline")
    database = home / "warehouse.duckdb"
    patch = pytest.MonkeyPatch()
    patch.setenv("TEXTCLF_HOME", str(home))
    patch.setenv("AIRFLOW_CONN_TEXTCLF_WAREHOUSE", json.dumps({"conn_type": "duckdb", "host": str(database)}))
    config_file = home / "textclf.json"
    config_file.write_text(json.dumps({"max_epochs": 3, "min_training_examples": 100, "task_retries": 0}), encoding="utf-8")
    patch.setenv("TEXTCLF_CONFIG", str(config_file))

    from textclf.config import load_config
    from textclf.loader import load_file
    from textclf.warehouse import open_embedded

    config = load_config()
    with open_embedded(str(database)) as warehouse:
        load_file(DEMO_DATA, warehouse=warehouse, table=config.source, partition_column=config.source_date_column)

    spec = importlib.util.spec_from_file_location("textclf_daily_under_test", DAG_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    # Each dag.test() call needs its own logical date; the run_date param names the day to process.
    run_numbers = itertools.count()

    def run(day: dt.date, **conf) -> dict[str, str]:
        dag_run = module.dag.test(
            logical_date=dt.datetime.combine(day, dt.time(), dt.timezone.utc) + dt.timedelta(minutes=next(run_numbers)),
            # dag.test() keeps a run's conf in the DAG's params, so every run names each param.
            run_conf={"run_date": day.isoformat(), "retrain": True, "source_table": None, **conf},
        )
        return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}

    def query(sql: str, parameters=None):
        with open_embedded(str(database)) as warehouse:
            return warehouse.query(sql, parameters).to_pylist()

    yield {"run": run, "query": query, "config": config, "home": home, "module": module}
    patch.undo()


def _predictions(pipeline, day):
    return pipeline["query"](
        "SELECT review_id, predicted_label, model_version FROM `textclf-local.textclf.predictions` "
        "WHERE run_date = @day ORDER BY review_id",
        {"day": day},
    )


def _source_ids(pipeline, day):
    rows = pipeline["query"](
        "SELECT review_id FROM `textclf-local.textclf.reviews` WHERE review_date = @day ORDER BY review_id",
        {"day": day},
    )
    return [row["review_id"] for row in rows]


def test_daily_run_succeeds_end_to_end(pipeline):
    states = pipeline["run"](LAST_DAY)

    assert states == {task_id: "success" for task_id in TASK_IDS}
    predictions = _predictions(pipeline, LAST_DAY)
    assert [row["review_id"] for row in predictions] == _source_ids(pipeline, LAST_DAY)
    assert {row["model_version"] for row in predictions} == {"20261130"}
    assert {row["predicted_label"] for row in predictions} <= {"negative", "positive"}

    report = pipeline["query"](
        "SELECT * FROM `textclf-local.textclf.daily_report` WHERE run_date = @day", {"day": LAST_DAY}
    )
    assert len(report) == 1
    assert report[0]["rows_predicted"] == len(predictions)
    assert report[0]["source_rows"] == len(predictions)
    assert report[0]["accuracy"] > 0.8
    assert sorted(entry["label"] for entry in report[0]["class_shares"]) == ["negative", "positive"]

    durations = pipeline["query"](
        "SELECT task_id FROM `textclf-local.textclf.task_durations` WHERE run_date = @day ORDER BY task_id",
        {"day": LAST_DAY},
    )
    assert [row["task_id"] for row in durations] == sorted(TASK_IDS)

    report_dir = pipeline["home"] / "store" / "reports" / LAST_DAY.isoformat()
    assert (report_dir / "report.md").read_text(encoding="utf-8").startswith("# textclf daily report: 2026-11-30")
    assert (report_dir / "probability_histogram.png").stat().st_size > 0
    assert (pipeline["home"] / "store" / "models" / "20261130" / "_COMPLETE").is_file()


def test_rerun_leaves_same_rows(pipeline):
    before = _predictions(pipeline, LAST_DAY)

    states = pipeline["run"](LAST_DAY, retrain=False)

    assert states == {task_id: "success" for task_id in TASK_IDS}
    after = _predictions(pipeline, LAST_DAY)
    assert after == before
    counts = pipeline["query"](
        "SELECT COUNT(*) AS n FROM `textclf-local.textclf.daily_report` WHERE run_date = @day", {"day": LAST_DAY}
    )
    assert counts == [{"n": 1}]


def test_three_days_leave_three_partitions(pipeline):
    days = [LAST_DAY - dt.timedelta(days=offset) for offset in (3, 2, 1)]

    # The first day trains; the next two reuse the newest model up to their day, which is the
    # first day's and never the later model trained for LAST_DAY.
    assert pipeline["run"](days[0]) == {task_id: "success" for task_id in TASK_IDS}
    for day in days[1:]:
        assert pipeline["run"](day, retrain=False) == {task_id: "success" for task_id in TASK_IDS}

    for day in days:
        predictions = _predictions(pipeline, day)
        assert [row["review_id"] for row in predictions] == _source_ids(pipeline, day)
        assert {row["model_version"] for row in predictions} == {"20261127"}
    partitions = pipeline["query"](
        "SELECT run_date, COUNT(*) AS n FROM `textclf-local.textclf.predictions` GROUP BY run_date ORDER BY run_date"
    )
    assert [row["run_date"] for row in partitions] == [*days, LAST_DAY]
    assert [row["n"] for row in partitions] == [len(_source_ids(pipeline, day)) for day in [*days, LAST_DAY]]


def test_reuse_without_earlier_model_fails(pipeline):
    first_day = dt.date(2026, 11, 18)

    states = pipeline["run"](first_day, retrain=False)

    assert states["check_source_data"] == "success"
    assert states["train_model"] == "failed"
    assert _predictions(pipeline, first_day) == []


def test_empty_day_skips_rest_of_run(pipeline):
    states = pipeline["run"](EMPTY_DAY, retrain=False)

    assert states == {task_id: "skipped" for task_id in TASK_IDS}
    assert _predictions(pipeline, EMPTY_DAY) == []


def test_empty_day_fails_when_skipping_is_off(pipeline, monkeypatch):
    config_file = Path(os.environ["TEXTCLF_CONFIG"])
    values = json.loads(config_file.read_text(encoding="utf-8"))
    strict_file = config_file.with_name("strict.json")
    strict_file.write_text(json.dumps({**values, "skip_empty_days": False}), encoding="utf-8")
    monkeypatch.setenv("TEXTCLF_CONFIG", str(strict_file))
    spec = importlib.util.spec_from_file_location("textclf_daily_strict", DAG_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    dag_run = module.dag.test(
        logical_date=dt.datetime.combine(EMPTY_DAY, dt.time(), dt.timezone.utc) + dt.timedelta(hours=1),
        run_conf={"run_date": EMPTY_DAY.isoformat(), "retrain": False},
    )
    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}

    assert states["check_source_data"] == "failed"
    assert states["predict"] == "upstream_failed"
