"""Reruns and backfills replace one day's partitions and leave every other day as it was.

The tasks run through their operators' ``execute`` on the embedded warehouse, with a small
SavedModel published in a local model store, so no training runs here.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Iterator
from zoneinfo import ZoneInfo

import pyarrow as pa
import pytest

from conftest import REPOSITORY_DIR
from savedmodel_fixtures import export_text_classifier

RUN_DAYS = (dt.date(2014, 12, 1), dt.date(2014, 12, 2), dt.date(2014, 12, 3))
MODEL_VERSION = "20141130"
ROWS_PER_DAY = 40
TIMEZONE = "Asia/Seoul"
TEXTS = ("좋은 영화였다", "bad movie", "great film 👍", "최악이다 ㅠㅠ", "so so", "재밌어요 10점")
DAY_TASKS = ("check_source_data", "train_model", "import_model", "predict", "report")
# The tasks whose durations a run of import, predict and report records: the report task times itself too.
TIMED_TASKS = ("import_model", "predict", "report")


class FakeTaskInstance:
    """The part of a task instance that the operators use: XComs of upstream tasks."""

    def __init__(self, xcoms: dict[str, dict[str, Any]]) -> None:
        self.xcoms = xcoms

    def xcom_pull(self, task_ids: str) -> dict[str, Any] | None:
        return self.xcoms.get(task_ids)


@dataclass
class RunFlavour:
    """How a DAG run names its day: a scheduled run, a backfill or a manual run with `run_date`."""

    run_id_prefix: str
    uses_run_date_param: bool


SCHEDULED = RunFlavour("scheduled", uses_run_date_param=False)
BACKFILL = RunFlavour("backfill", uses_run_date_param=False)
MANUAL = RunFlavour("manual", uses_run_date_param=True)


@dataclass
class Pipeline:
    """A textclf home with a source table, a published model and helpers that run the day's tasks."""

    home: Path
    database: Path
    config: Any
    sql_dir: Path = REPOSITORY_DIR / "sql"
    run_count: int = 0
    results: list[dict[str, Any]] = field(default_factory=list)

    def context(
        self, day: dt.date, flavour: RunFlavour, xcoms: dict[str, dict[str, Any]], params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        self.run_count += 1
        interval_start = None if flavour.uses_run_date_param else dt.datetime.combine(day, dt.time(), ZoneInfo(TIMEZONE))
        run_params = {"run_date": day.isoformat() if flavour.uses_run_date_param else None, "retrain": False}
        run_params["source_table"] = None
        run_params.update(params or {})
        run_id = f"{flavour.run_id_prefix}__{day.isoformat()}T00:00:00+00:00_{self.run_count}"
        return {
            "params": run_params,
            "data_interval_start": interval_start,
            "ti": FakeTaskInstance(xcoms),
            "dag_run": type("FakeDagRun", (), {"run_id": run_id, "run_after": None})(),
        }

    def build(self, operator_class: type, task_id: str, config: Any = None, **kwargs: Any) -> Any:
        from airflow.sdk import DAG

        with DAG(f"textclf_reliability_{self.run_count}", schedule=None, template_searchpath=[str(self.sql_dir)]):
            operator = operator_class(task_id=task_id, config=config or self.config, **kwargs)
        operator.resolve_template_files()
        return operator

    def run_task(self, operator: Any, context: dict[str, Any]) -> dict[str, Any]:
        operator.render_template_fields(context)
        result = operator.execute(context)
        context["ti"].xcoms[operator.task_id] = result
        self.results.append(result)
        return result

    def run_day(
        self,
        day: dt.date,
        flavour: RunFlavour = SCHEDULED,
        *,
        config: Any = None,
        tasks: tuple[str, ...] = ("import_model", "predict", "report"),
        params: dict[str, Any] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Run the named tasks of one day, in DAG order, and return their XComs.

        ``import_model`` here registers the published model with ``create_model`` directly, which
        skips the preflight memory check that costs seconds per call. Tests of the import step run
        its operator.
        """
        from textclf.operators import PredictOperator, ReportOperator, SourceDataCheckOperator, TrainModelOperator
        from textclf.sql_names import model_name
        from textclf.store import get_model_store
        from textclf.warehouse import open_embedded

        config = config or self.config
        xcoms: dict[str, dict[str, Any]] = {}
        context = self.context(day, flavour, xcoms, params)
        operators = {
            "check_source_data": (SourceDataCheckOperator, {}),
            "train_model": (TrainModelOperator, {}),
            "predict": (PredictOperator, {}),
            "report": (ReportOperator, {}),
        }
        for task_id in DAY_TASKS:
            if task_id not in tasks:
                continue
            if task_id == "import_model":
                store = get_model_store(config.resolved_store_uri)
                with open_embedded(str(self.database)) as warehouse:
                    warehouse.create_model(model_name(config, day), store.model_path(MODEL_VERSION))
                xcoms[task_id] = {"model_version": MODEL_VERSION, "duration_seconds": 0.1}
                continue
            operator_class, kwargs = operators[task_id]
            self.run_task(self.build(operator_class, task_id, config, **kwargs), context)
        return xcoms

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        from textclf.warehouse import open_embedded

        with open_embedded(str(self.database)) as warehouse:
            return warehouse.query(sql, parameters).to_pylist()

    def table_rows(self, table: str, day: dt.date | None = None) -> list[dict[str, Any]]:
        """Return every column of every row of a result table (or of one day), in a stable order."""
        where = "" if day is None else f"WHERE {self.config.result_date_column} = @day"
        order = "run_date"
        if "predictions" in table:
            order = "review_id"
        elif "durations" in table:
            order = "task_id"
        return self.query(
            f"SELECT * FROM `textclf-local.textclf.{table}` {where} ORDER BY run_date, {order}",
            None if day is None else {"day": day},
        )


def source_rows(day: dt.date, first_id: int, texts: list[str | None] | None = None) -> pa.Table:
    """Return one day of source rows, with ids from ``first_id`` and ratings that label every other row."""
    texts = texts if texts is not None else [TEXTS[i % len(TEXTS)] for i in range(ROWS_PER_DAY)]
    return pa.table(
        {
            "review_id": pa.array(range(first_id, first_id + len(texts)), pa.int64()),
            "text": pa.array(texts, pa.string()),
            "rating": pa.array([(i % 10) + 1 for i in range(len(texts))], pa.int64()),
            "review_date": pa.array([day] * len(texts), pa.date32()),
        }
    )


def make_pipeline(home: Path, saved_model_dir: Path, connection: dict[str, Any], **config_values: Any) -> Pipeline:
    """Set up a textclf home: configuration, connection, source days and a published model version."""
    from textclf.config import load_config
    from textclf.store import METRICS_FILE, SAVED_MODEL_DIR, get_model_store
    from textclf.warehouse import open_embedded

    database = Path(connection["host"])
    config_file = home / "textclf.json"
    config_file.write_text(json.dumps({"task_retries": 0, "timezone": TIMEZONE, **config_values}), encoding="utf-8")
    config = load_config(config_file)

    with open_embedded(str(database)) as warehouse:
        for index, day in enumerate(RUN_DAYS):
            warehouse.load_partitions(
                source_rows(day, first_id=index * 1000), table=config.source, partition_column="review_date"
            )

    version_dir = home / "export" / MODEL_VERSION
    shutil.copytree(saved_model_dir, version_dir / SAVED_MODEL_DIR)
    (version_dir / METRICS_FILE).write_text(json.dumps({"class_names": ["negative", "positive"]}), encoding="utf-8")
    get_model_store(config.resolved_store_uri).publish(version_dir, MODEL_VERSION)
    return Pipeline(home=home, database=database, config=config)


@contextlib.contextmanager
def pipeline_environment(
    home: Path, saved_model_dir: Path, connection: dict[str, Any] | None = None, **config_values: Any
) -> Iterator[Pipeline]:
    """Make a pipeline in ``home`` and point TEXTCLF_HOME, TEXTCLF_CONFIG and the connection at it."""
    connection = connection or {"conn_type": "duckdb", "host": str(home / "warehouse.duckdb")}
    patch = pytest.MonkeyPatch()
    try:
        patch.setenv("TEXTCLF_HOME", str(home))
        patch.setenv("AIRFLOW_CONN_TEXTCLF_WAREHOUSE", json.dumps(connection))
        pipeline = make_pipeline(home, saved_model_dir, connection, **config_values)
        patch.setenv("TEXTCLF_CONFIG", str(home / "textclf.json"))
        yield pipeline
    finally:
        patch.undo()


@pytest.fixture(scope="module")
def saved_model_dir(tmp_path_factory):
    return export_text_classifier(tmp_path_factory.mktemp("model") / "saved_model")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, saved_model_dir):
    with pipeline_environment(tmp_path_factory.mktemp("reruns"), saved_model_dir) as pipeline:
        yield pipeline


def test_rerun_leaves_one_run_of_rows(pipeline):
    day = RUN_DAYS[0]
    pipeline.run_day(day)
    first = pipeline.table_rows("predictions", day)

    pipeline.run_day(day)
    second = pipeline.table_rows("predictions", day)

    assert len(first) == ROWS_PER_DAY
    assert [row["review_id"] for row in second] == [row["review_id"] for row in first]
    # The second run's rows replaced the first's: every predicted_at is newer.
    assert min(row["predicted_at"] for row in second) > max(row["predicted_at"] for row in first)
    assert len(pipeline.table_rows("daily_report", day)) == 1
    assert len(pipeline.table_rows("task_durations", day)) == len(TIMED_TASKS)


def test_backfill_range_leaves_one_partition_per_day(pipeline):
    for day in RUN_DAYS:
        pipeline.run_day(day, BACKFILL)

    counts = pipeline.query(
        "SELECT run_date, COUNT(*) AS n, COUNT(DISTINCT review_id) AS ids "
        "FROM `textclf-local.textclf.predictions` GROUP BY run_date ORDER BY run_date"
    )
    assert [row["run_date"] for row in counts] == list(RUN_DAYS)
    assert [row["n"] for row in counts] == [ROWS_PER_DAY] * len(RUN_DAYS)
    assert [row["ids"] for row in counts] == [ROWS_PER_DAY] * len(RUN_DAYS)
    reports = pipeline.query(
        "SELECT run_date, COUNT(*) AS n FROM `textclf-local.textclf.daily_report` GROUP BY run_date ORDER BY run_date"
    )
    assert reports == [{"run_date": day, "n": 1} for day in RUN_DAYS]


@pytest.mark.parametrize(
    "flavours", [(SCHEDULED, BACKFILL), (BACKFILL, SCHEDULED), (MANUAL, SCHEDULED)], ids=["scheduled_then_backfill", "backfill_then_scheduled", "manual_then_scheduled"],
)
def test_runs_of_same_day_never_stack(pipeline, flavours):
    day = RUN_DAYS[1]
    for flavour in flavours:
        pipeline.run_day(day, flavour)

    predictions = pipeline.table_rows("predictions", day)
    assert len(predictions) == ROWS_PER_DAY
    assert len({row["review_id"] for row in predictions}) == ROWS_PER_DAY
    assert len({row["predicted_at"] for row in predictions}) == 1
    assert len(pipeline.table_rows("daily_report", day)) == 1
    durations = pipeline.table_rows("task_durations", day)
    assert len(durations) == len(TIMED_TASKS)
    assert {row["dag_run_id"].split("__")[0] for row in durations} == {flavours[-1].run_id_prefix}


def test_rerun_keeps_other_days_unchanged(pipeline):
    for day in RUN_DAYS:
        pipeline.run_day(day, BACKFILL)
    before = {table: pipeline.table_rows(table) for table in ("predictions", "daily_report", "task_durations")}

    pipeline.run_day(RUN_DAYS[1], MANUAL)
    after = {table: pipeline.table_rows(table) for table in ("predictions", "daily_report", "task_durations")}

    for table in before:
        others_before = [row for row in before[table] if row["run_date"] != RUN_DAYS[1]]
        others_after = [row for row in after[table] if row["run_date"] != RUN_DAYS[1]]
        assert len(others_before) > 0, table
        assert others_after == others_before, table
        rerun_day = [row for row in after[table] if row["run_date"] == RUN_DAYS[1]]
        assert rerun_day != [row for row in before[table] if row["run_date"] == RUN_DAYS[1]], table


def test_run_day_of_scheduled_run_is_interval_start(pipeline):
    xcoms = pipeline.run_day(RUN_DAYS[2], SCHEDULED, tasks=("import_model", "predict"))

    assert xcoms["predict"]["run_day"] == RUN_DAYS[2].isoformat()
    assert xcoms["predict"]["rows_predicted"] == ROWS_PER_DAY


def test_unlabelled_source_reuses_stored_model(pipeline):
    import dataclasses

    from textclf.operators import TrainModelOperator

    config = dataclasses.replace(pipeline.config, label_column=None)
    day = RUN_DAYS[1]
    context = pipeline.context(day, SCHEDULED, {}, {"retrain": True})

    result = pipeline.run_task(pipeline.build(TrainModelOperator, "train_model", config), context)

    assert result["model_version"] == MODEL_VERSION
    assert result["retrained"] is False
