"""Killed writers leave complete partitions, and tasks in parallel processes share the embedded warehouse.

The killed and parallel writers are subprocesses that run the real ``EmbeddedWarehouse`` on the
rendered ``sql/predict.sql`` and ``sql/report.sql``. A wrapper in the subprocess prints a marker
and sleeps at the point where the test kills it, so each kill lands in the middle of a write.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
import time

import pyarrow as pa
import pytest
from airflow.sdk.exceptions import AirflowFailException

from conftest import REPOSITORY_DIR
from test_reliability_reruns import (
    BACKFILL,
    MANUAL,
    MODEL_VERSION,
    RUN_DAYS,
    SCHEDULED,
    pipeline_environment,
    saved_model_dir,  # noqa: F401 - a fixture
    source_rows,
)
from textclf.identifiers import TableRef

LARGE_DAY = dt.date(2014, 12, 10)
LARGE_DAY_ROWS = 6000
BATCH_ROWS = 200
TESTS_DIR = REPOSITORY_DIR / "tests"

# Runs in a fresh interpreter: argv is the database, the JSON job file, and where to pause.
# "predict" pauses after the second batch of ML.PREDICT, while rows stream into the INSERT;
# "insert" pauses after the INSERT of a write or load, before its COMMIT.
WRITER_SCRIPT = textwrap.dedent(
    """
    import datetime as dt, json, logging, sys, time
    import pyarrow as pa
    from textclf.identifiers import TableRef
    from textclf.warehouse import embedded, ml_predict
    from textclf.warehouse.embedded import EmbeddedWarehouse

    logging.basicConfig(level=logging.INFO)
    database, job_file, pause_at = sys.argv[1], sys.argv[2], sys.argv[3]
    job = json.load(open(job_file))
    pause_seconds = float(job.get("pause_seconds", 60))

    def pause(marker):
        print(marker, flush=True)
        time.sleep(pause_seconds)

    if pause_at == "predict":
        predict_batches = ml_predict.predict_batches

        def paused_predict_batches(*args, **kwargs):
            reader = predict_batches(*args, **kwargs)

            def batches():
                for number, batch in enumerate(reader, start=1):
                    if number == 2:
                        pause("predicting")
                    yield batch

            return pa.RecordBatchReader.from_batches(reader.schema, batches())

        ml_predict.predict_batches = paused_predict_batches

    if pause_at == "insert":
        class PausingConnection:
            def __init__(self, connection):
                self._connection = connection

            def execute(self, sql, *args, **kwargs):
                result = self._connection.execute(sql, *args, **kwargs)
                if sql.startswith("INSERT INTO"):
                    pause("inserted")
                return result

            def __getattr__(self, name):
                return getattr(self._connection, name)

        open_database = EmbeddedWarehouse._open_database
        EmbeddedWarehouse._open_database = lambda self, deadline: PausingConnection(open_database(self, deadline))

    warehouse = EmbeddedWarehouse(database, predict_batch_size=job.get("batch_rows"))
    table = TableRef(*job["table"])
    day = dt.date.fromisoformat(job["day"])
    if job["kind"] == "write":
        parameters = {name: dt.date.fromisoformat(value) if name == "run_date" else value
                      for name, value in job["parameters"].items()}
        rows = warehouse.write_partition(job["sql"], parameters, table=table, partition_column="run_date",
                                         partition_date=day)
    else:
        data = pa.table({"run_date": pa.array([day] * 3, pa.date32()), "task_id": ["a", "b", "c"],
                         "duration_seconds": [1.0, 2.0, 3.0], "dag_run_id": ["x"] * 3,
                         "recorded_at": pa.array([dt.datetime(2014, 12, 1, tzinfo=dt.timezone.utc)] * 3,
                                                 pa.timestamp("us", tz="UTC"))})
        rows = sum(warehouse.load_partitions(data, table=table, partition_column="run_date").values())
    print("done", rows, flush=True)
    """
)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, saved_model_dir):  # noqa: F811 - the imported fixture
    from textclf.warehouse import open_embedded

    with pipeline_environment(tmp_path_factory.mktemp("crashes"), saved_model_dir) as pipeline:
        with open_embedded(str(pipeline.database)) as warehouse:
            warehouse.load_partitions(
                source_rows(LARGE_DAY, first_id=100_000, texts=[f"review number {i} 좋은 영화" for i in range(LARGE_DAY_ROWS)]),
                table=pipeline.config.source,
                partition_column="review_date",
            )
        for day in RUN_DAYS:
            pipeline.run_day(day, BACKFILL)
        yield pipeline


def rendered_sql(pipeline, operator_class, day):
    operator = pipeline.build(operator_class, "step")
    operator.render_template_fields(pipeline.context(day, MANUAL, {}))
    return operator.sql


def start_writer(pipeline, tmp_path, job, pause_at):
    job_file = tmp_path / f"job-{time.monotonic_ns()}.json"
    job_file.write_text(json.dumps(job), encoding="utf-8")
    return subprocess.Popen(
        [sys.executable, "-c", WRITER_SCRIPT, str(pipeline.database), str(job_file), pause_at],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(TESTS_DIR)},
    )


def kill_at_marker(writer, marker):
    line = writer.stdout.readline().strip()
    if line != marker:
        writer.kill()
        pytest.fail(f"writer printed {line!r} instead of {marker!r}: {writer.communicate(timeout=30)[1][-3000:]}")
    writer.kill()
    writer.wait(timeout=30)


def predict_job(pipeline, day, batch_rows=BATCH_ROWS):
    from textclf.operators import PredictOperator

    return {
        "kind": "write",
        "sql": rendered_sql(pipeline, PredictOperator, day),
        "parameters": {"run_date": day.isoformat(), "model_version": MODEL_VERSION},
        "table": table_parts(pipeline.config.predictions),
        "day": day.isoformat(),
        "batch_rows": batch_rows,
    }


def table_parts(table):
    return [table.project, table.dataset, table.table]


def import_day(pipeline, day):
    pipeline.run_day(day, SCHEDULED, tasks=("import_model",))


# -- Killed writes ---------------------------------------------------------------------------------


def test_killed_first_predict_leaves_no_partition(pipeline, tmp_path):
    import_day(pipeline, LARGE_DAY)
    writer = start_writer(pipeline, tmp_path, predict_job(pipeline, LARGE_DAY), "predict")

    kill_at_marker(writer, "predicting")

    assert pipeline.table_rows("predictions", LARGE_DAY) == []
    # The day predicts in full afterwards, through the same batches.
    pipeline.run_day(LARGE_DAY, MANUAL, tasks=("import_model", "predict"))
    assert len(pipeline.table_rows("predictions", LARGE_DAY)) == LARGE_DAY_ROWS


def test_killed_predict_keeps_previous_partition(pipeline, tmp_path):
    import_day(pipeline, LARGE_DAY)
    pipeline.run_day(LARGE_DAY, MANUAL, tasks=("import_model", "predict"))
    before = pipeline.table_rows("predictions")
    writer = start_writer(pipeline, tmp_path, predict_job(pipeline, LARGE_DAY), "predict")

    kill_at_marker(writer, "predicting")

    assert len([row for row in before if row["run_date"] == LARGE_DAY]) == LARGE_DAY_ROWS
    assert pipeline.table_rows("predictions") == before


def test_killed_report_keeps_previous_partition(pipeline, tmp_path):
    from textclf.operators import ReportOperator

    day = RUN_DAYS[1]
    before = pipeline.table_rows("daily_report")
    job = {
        "kind": "write",
        "sql": rendered_sql(pipeline, ReportOperator, day),
        "parameters": {"run_date": day.isoformat(), "model_version": MODEL_VERSION, "low_confidence_threshold": 0.6},
        "table": table_parts(pipeline.config.report),
        "day": day.isoformat(),
    }
    writer = start_writer(pipeline, tmp_path, job, "insert")

    kill_at_marker(writer, "inserted")

    assert pipeline.table_rows("daily_report") == before


def test_killed_load_keeps_previous_partitions(pipeline, tmp_path):
    before = pipeline.table_rows("task_durations")
    job = {"kind": "load", "table": table_parts(pipeline.config.durations), "day": RUN_DAYS[2].isoformat()}
    writer = start_writer(pipeline, tmp_path, job, "insert")

    kill_at_marker(writer, "inserted")

    assert pipeline.table_rows("task_durations") == before


def test_killed_loader_leaves_new_table_empty(pipeline, tmp_path):
    table = TableRef("textclf-local", "textclf", "durations_copy")
    job = {"kind": "load", "table": table_parts(table), "day": RUN_DAYS[2].isoformat()}
    writer = start_writer(pipeline, tmp_path, job, "insert")

    kill_at_marker(writer, "inserted")

    from textclf.warehouse import open_embedded

    with open_embedded(str(pipeline.database)) as warehouse:
        assert not warehouse.table_exists(table)


# -- Model versions --------------------------------------------------------------------------------


PUBLISH_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from textclf import store

    fsync = os.fsync

    def slow_fsync(descriptor):
        print("copying", flush=True)
        time.sleep(60)

    store.os.fsync = slow_fsync
    store.LocalModelStore(sys.argv[1]).publish(Path(sys.argv[2]), sys.argv[3])
    """
)


def test_killed_publish_is_invisible(pipeline):
    from textclf.store import get_model_store

    store = get_model_store(pipeline.config.resolved_store_uri)
    versions_before = store.versions()
    source = pipeline.home / "store" / "models" / MODEL_VERSION
    publisher = subprocess.Popen(
        [sys.executable, "-c", PUBLISH_SCRIPT, store.root, str(source), "20141209"], stdout=subprocess.PIPE, text=True
    )

    kill_at_marker(publisher, "copying")

    assert store.versions() == versions_before
    assert store.latest_version() == MODEL_VERSION
    assert not (pipeline.home / "store" / "models" / "20141209").exists()


def test_import_rejects_version_without_complete_marker(pipeline):
    from textclf.operators import ImportModelOperator

    half_written = pipeline.home / "store" / "models" / "20141208"
    (half_written / "saved_model").mkdir(parents=True)
    (half_written / "saved_model" / "saved_model.pb").write_bytes(b"partial")
    context = pipeline.context(dt.date(2014, 12, 8), SCHEDULED, {"train_model": {"model_version": "20141208"}})

    with pytest.raises(AirflowFailException) as failure:
        pipeline.run_task(pipeline.build(ImportModelOperator, "import_model"), context)

    assert str(failure.value).startswith("Model version 20141208 is not complete in ")
    assert "Rerun task 'train_model' for 2014-12-08." in str(failure.value)
    assert pipeline.query(
        "SELECT COUNT(*) AS n FROM `_textclf.models` WHERE model_name = 'textclf.textclf_model_20141208'"
    ) == [{"n": 0}]


def test_failed_predict_leaves_warehouse_usable(pipeline):
    from textclf.operators import PredictOperator

    # No model is imported for this day, so ML.PREDICT fails; the next statement must not hang.
    context = pipeline.context(dt.date(2014, 12, 11), SCHEDULED, {"import_model": {"model_version": MODEL_VERSION}})
    with pytest.raises(Exception, match="textclf_model_20141211"):
        pipeline.run_task(pipeline.build(PredictOperator, "predict"), context)

    assert pipeline.query("SELECT 1 AS x") == [{"x": 1}]


# -- Parallel processes ----------------------------------------------------------------------------


DAY_SCRIPT = textwrap.dedent(
    """
    import datetime as dt, os, sys
    from pathlib import Path
    from textclf.config import load_config
    from test_reliability_reruns import SCHEDULED, Pipeline

    # Importing the test helpers runs conftest, which points TEXTCLF_HOME at a fresh folder.
    os.environ["TEXTCLF_HOME"] = sys.argv[1]
    home = Path(sys.argv[1])
    pipeline = Pipeline(home=home, database=home / "warehouse.duckdb", config=load_config(home / "textclf.json"))
    xcoms = pipeline.run_day(dt.date.fromisoformat(sys.argv[2]), SCHEDULED)
    print("done", xcoms["predict"]["rows_predicted"], flush=True)
    """
)


def test_parallel_runs_all_succeed(pipeline):
    # Three runs at once: two of them for the same day, and one for another day.
    days = (RUN_DAYS[0], RUN_DAYS[1], RUN_DAYS[1])
    others_before = [row for row in pipeline.table_rows("predictions") if row["run_date"] not in days]
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", DAY_SCRIPT, str(pipeline.home), day.isoformat()],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(TESTS_DIR)},
        )
        for day in days
    ]
    outputs = [run.communicate(timeout=240) for run in runs]

    for run, (stdout, stderr) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, stderr[-3000:]
        assert stdout.strip().endswith("done 40"), stdout[-500:]
        assert "Could not set lock" not in stderr
    for day in set(days):
        predictions = pipeline.table_rows("predictions", day)
        assert len(predictions) == 40
        assert len({row["review_id"] for row in predictions}) == 40
        assert len(pipeline.table_rows("daily_report", day)) == 1
    assert [row for row in pipeline.table_rows("predictions") if row["run_date"] not in days] == others_before


def test_write_waits_for_long_predict(pipeline, tmp_path):
    import_day(pipeline, LARGE_DAY)
    predict = start_writer(pipeline, tmp_path, {**predict_job(pipeline, LARGE_DAY), "pause_seconds": 8}, "predict")
    assert predict.stdout.readline().strip() == "predicting"

    job = {"kind": "load", "table": table_parts(pipeline.config.durations), "day": RUN_DAYS[0].isoformat()}
    waiting = start_writer(pipeline, tmp_path, job, "none")
    outputs = [process.communicate(timeout=240) for process in (predict, waiting)]

    assert [process.returncode for process in (predict, waiting)] == [0, 0], [err[-2000:] for _, err in outputs]
    assert outputs[0][0].strip().endswith(f"done {LARGE_DAY_ROWS}")
    assert outputs[1][0].strip().endswith("done 3")
    assert "Waiting for" in outputs[1][1]
    assert "Could not set lock" not in outputs[1][1]
    assert len(pipeline.table_rows("predictions", LARGE_DAY)) == LARGE_DAY_ROWS
    assert [row["task_id"] for row in pipeline.table_rows("task_durations", RUN_DAYS[0])] == ["a", "b", "c"]
