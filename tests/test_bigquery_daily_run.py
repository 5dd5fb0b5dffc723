"""One daily run of the DAG's tasks on BigQuery and Cloud Storage, against fake Google clients.

The tasks are the DAG file's own operators, run one by one in dependency order with each one's
templates rendered as the task runner renders them. Training runs for real on canned examples, so
the import step checks and imports a real SavedModel. The fakes record every request, and the
tests assert them whole and in order.
"""

from __future__ import annotations

import csv
import datetime as dt
import importlib.util
import json
import re
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pytest
from google.cloud.bigquery import SchemaField

from conftest import REPOSITORY_DIR
from fakes_gcp import FakeBigQueryClient, FakeBigQueryHook, FakeGCSHook, FakeReadClient, FakeStorageClient

DAG_FILE = REPOSITORY_DIR / "dags" / "textclf_daily.py"
DEMO_DATA = REPOSITORY_DIR / "plugins" / "textclf" / "demo_data" / "reviews.csv"
SQL_DIR = REPOSITORY_DIR / "sql"

PROJECT = "textclf-prod"
LOCATION = "asia-northeast3"
BUCKET = "textclf-models"
STORE_PREFIX = "store"
WAREHOUSE_CONN_ID = "textclf_bigquery"
STORE_CONN_ID = "textclf_gcs"
SERVICE_ACCOUNT = "textclf-runner@textclf-prod.iam.gserviceaccount.com"
RUN_DAY = dt.date(2026, 11, 30)
VERSION = "20261130"
RUN_ID = "manual__2026-12-01T00:00:00+00:00"
TRAINING_EXAMPLE_COUNT = 300
ROWS_PREDICTED = 287
TASK_IDS = ["check_source_data", "train_model", "import_model", "predict", "report"]

SOURCE = f"{PROJECT}.textclf.reviews"
PREDICTIONS = f"{PROJECT}.textclf.predictions"
DURATIONS = f"{PROJECT}.textclf.task_durations"
MODEL = f"{PROJECT}.textclf.textclf_model_{VERSION}"
VERSION_PREFIX = f"{STORE_PREFIX}/models/{VERSION}"
MODEL_PATH = f"gs://{BUCKET}/{VERSION_PREFIX}/saved_model/*"
REPORT_FILES = ["class_shares.png", "probability_histogram.png", "report.md", "summary.json", "task_durations.png"]
# As the table API returns it: legacy type names, which the warehouse maps to INT64 and the like.
SOURCE_SCHEMA = [
    SchemaField("review_id", "INTEGER"),
    SchemaField("text", "STRING"),
    SchemaField("rating", "INTEGER"),
    SchemaField("review_date", "DATE"),
]
RUN_DATE_PARAMETER = {"name": "run_date", "parameterType": {"type": "DATE"}, "parameterValue": {"value": "2026-11-30"}}


def _labels(task_id: str) -> dict[str, str]:
    return {"dag_id": "textclf_daily", "task_id": task_id}


def _training_examples() -> pa.Table:
    # The first labelled demo reviews before the run's day, labelled as sql/labels.sql labels them.
    texts, labels, days = [], [], []
    with DEMO_DATA.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            rating = int(row["rating"])
            day = dt.date.fromisoformat(row["review_date"])
            if day >= RUN_DAY or 5 <= rating <= 8:
                continue
            texts.append(row["text"])
            labels.append("negative" if rating <= 4 else "positive")
            days.append(day)
            if len(texts) == TRAINING_EXAMPLE_COUNT:
                break
    return pa.table({"text": texts, "label": labels, "example_date": pa.array(days, pa.date32())})


def _report_row() -> dict[str, Any]:
    return {
        "run_date": RUN_DAY,
        "source_rows": ROWS_PREDICTED,
        "rows_predicted": ROWS_PREDICTED,
        "rows_excluded": 0,
        "mean_probability": 0.81,
        "low_confidence_share": 0.12,
        "labelled_rows": 180,
        "accuracy": 0.87,
        "class_shares": [
            {"label": "negative", "share": 0.4, "trailing_share": 0.38, "share_change": 0.02},
            {"label": "positive", "share": 0.6, "trailing_share": 0.62, "share_change": -0.02},
        ],
        "model_version": VERSION,
    }


def _queue_results(client: FakeBigQueryClient) -> None:
    """Queue one result per job of the run, in the order the tasks start them."""
    empty = pa.table({})
    results = [
        # check_source_data: the figures of sql/check_source_day.sql
        pa.table(
            {
                "row_count": [ROWS_PREDICTED],
                "blank_text_count": [0],
                "duplicate_id_count": [0],
                "duplicate_row_count": [0],
                "training_example_count": [TRAINING_EXAMPLE_COUNT],
            }
        ),
        # train_model: the labelled examples
        _training_examples(),
        # import_model: CREATE OR REPLACE MODEL
        empty,
        # predict: the rows written into the partition
        pa.table({"review_id": list(range(ROWS_PREDICTED))}),
        # report: the report row written, read back, the class-share history, the histogram and
        # the trailing durations
        pa.table({"run_date": [RUN_DAY]}),
        pa.Table.from_pylist([_report_row()]),
        pa.Table.from_pylist(
            [
                {"run_date": RUN_DAY - dt.timedelta(days=1), "label": "negative", "share": 0.38},
                {"run_date": RUN_DAY - dt.timedelta(days=1), "label": "positive", "share": 0.62},
                {"run_date": RUN_DAY, "label": "negative", "share": 0.4},
                {"run_date": RUN_DAY, "label": "positive", "share": 0.6},
            ]
        ),
        pa.Table.from_pylist([{"bucket": 11, "row_count": 35}, {"bucket": 19, "row_count": 252}]),
        # Trailing medians far above any run here, so no task is flagged as slow.
        pa.Table.from_pylist(
            [{"run_date": RUN_DAY - dt.timedelta(days=1), "task_id": task_id, "duration_seconds": 3600.0} for task_id in TASK_IDS]
        ),
        # report: the durations' staging load and the replacement script
        empty,
        empty,
    ]
    for result in results:
        client.add_result(result)


class FakeTaskInstance:
    """The part of a task instance that the operators use: XComs of the tasks run before."""

    def __init__(self) -> None:
        self.returned: dict[str, Any] = {}
        self.try_number = 1

    def xcom_pull(self, task_ids: str | None = None, **kwargs: Any) -> Any:
        return self.returned.get(task_ids)


@pytest.fixture(scope="module")
def google():
    """Fake BigQuery and Cloud Storage clients, built where the warehouse and store build real ones."""
    from airflow.providers.google.cloud.hooks import bigquery as bigquery_hooks
    from airflow.providers.google.cloud.hooks import gcs as gcs_hooks
    from google.cloud import bigquery_storage

    client = FakeBigQueryClient(project=PROJECT, tables={DURATIONS}, schemas={SOURCE: SOURCE_SCHEMA})
    storage = FakeStorageClient()
    built_fakes: dict[str, list[Any]] = {"bigquery_hooks": [], "gcs_hooks": [], "read_clients": []}
    credentials = object()

    def bigquery_hook(**kwargs: Any) -> FakeBigQueryHook:
        hook = FakeBigQueryHook(client, credentials=credentials, **kwargs)
        built_fakes["bigquery_hooks"].append(hook)
        return hook

    def gcs_hook(**kwargs: Any) -> FakeGCSHook:
        hook = FakeGCSHook(storage, **kwargs)
        built_fakes["gcs_hooks"].append(hook)
        return hook

    def read_client(**kwargs: Any) -> FakeReadClient:
        reader = FakeReadClient(**kwargs)
        built_fakes["read_clients"].append(reader)
        return reader

    patch = pytest.MonkeyPatch()
    patch.setattr(bigquery_hooks, "BigQueryHook", bigquery_hook)
    patch.setattr(gcs_hooks, "GCSHook", gcs_hook)
    patch.setattr(bigquery_storage, "BigQueryReadClient", read_client)
    yield SimpleNamespace(client=client, storage=storage, credentials=credentials, **built_fakes)
    patch.undo()


@pytest.fixture(scope="module")
def dag_module(tmp_path_factory):
    """The DAG file, parsed with a configuration for BigQuery and a Cloud Storage model store."""
    home = tmp_path_factory.mktemp("bigquery_run")

    config_file = home / "textclf.json"
    config_file.write_text(
        json.dumps(
            {
                "project": PROJECT,
                "dataset": "textclf",
                "store_uri": f"gs://{BUCKET}/{STORE_PREFIX}",
                "warehouse_conn_id": WAREHOUSE_CONN_ID,
                "gcp_conn_id": STORE_CONN_ID,
                "impersonation_chain": [SERVICE_ACCOUNT],
                "location": LOCATION,
                "task_retries": 0,
                "max_epochs": 2,
            }
        ),
        encoding="utf-8",
    )

    patch = pytest.MonkeyPatch()
    patch.setenv("TEXTCLF_HOME", str(home))
    patch.setenv("TEXTCLF_CONFIG", str(config_file))
    patch.setenv(
        f"AIRFLOW_CONN_{WAREHOUSE_CONN_ID.upper()}",
        json.dumps({"conn_type": "google_cloud_platform", "extra": {"project": PROJECT}}),
    )

    spec = importlib.util.spec_from_file_location("textclf_daily_on_bigquery", DAG_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    patch.undo()


def _context(ti: FakeTaskInstance) -> dict[str, Any]:
    return {
        "params": {"run_date": RUN_DAY.isoformat(), "retrain": True, "source_table": None},
        "ti": ti,
        "dag_run": SimpleNamespace(run_id=RUN_ID),
    }


def _run_task(dag_module, task_id: str, ti: FakeTaskInstance) -> dict[str, Any]:
    # Like the task runner: a copy of the DAG's task, its templates rendered, then executed.
    task = dag_module.dag.get_task(task_id).prepare_for_execution()
    context = _context(ti)
    task.render_template_fields(context)
    returned = task.execute(context)
    ti.returned[task_id] = returned
    return returned


@pytest.fixture(scope="module")
def daily_run(google, dag_module):
    """The five tasks run once for RUN_DAY; the requests they sent, in order."""
    _queue_results(google.client)
    ti = FakeTaskInstance()
    for task_id in TASK_IDS:
        _run_task(dag_module, task_id, ti)

    jobs_by_task: dict[str, list[Any]] = {task_id: [] for task_id in TASK_IDS}
    for job in google.client.jobs:
        jobs_by_task[job.job_config.labels["task_id"]].append(job)
    return SimpleNamespace(
        returned=dict(ti.returned),
        ti=ti,
        jobs=list(google.client.jobs),
        jobs_by_task=jobs_by_task,
        calls=list(google.client.calls),
        storage_operations=list(google.storage.operations),
        bigquery_hooks=list(google.bigquery_hooks),
        gcs_hooks=list(google.gcs_hooks),
    )


def _render(template: str, config: Any) -> str:
    """Render a template of sql/ on its own, with the names of RUN_DAY's run."""
    import jinja2

    from textclf.sql_names import build_sql_names

    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(SQL_DIR), undefined=jinja2.StrictUndefined)
    names = build_sql_names(config, RUN_DAY, {"source_table": None})
    return environment.get_template(template).render(textclf=names)


def _query_config(task_id: str, *parameters: dict[str, Any]) -> dict[str, Any]:
    query: dict[str, Any] = {"queryParameters": list(parameters), "useLegacySql": False}
    if parameters:
        query["parameterMode"] = "NAMED"
    return {"query": query, "labels": _labels(task_id)}


def _partition_write_config(task_id: str, table_id: str, *parameters: dict[str, Any]) -> dict[str, Any]:
    return {
        "query": {
            "destinationTable": {"projectId": PROJECT, "datasetId": "textclf", "tableId": table_id},
            "writeDisposition": "WRITE_TRUNCATE",
            "createDisposition": "CREATE_IF_NEEDED",
            "timePartitioning": {"type": "DAY", "field": "run_date"},
            "queryParameters": list(parameters),
            "useLegacySql": False,
            "parameterMode": "NAMED",
        },
        "labels": _labels(task_id),
    }


def _int_parameter(name: str, value: int) -> dict[str, Any]:
    return {"name": name, "parameterType": {"type": "INT64"}, "parameterValue": {"value": str(value)}}


MODEL_VERSION_PARAMETER = {"name": "model_version", "parameterType": {"type": "STRING"}, "parameterValue": {"value": VERSION}}


def _staging_table(daily_run) -> str:
    load = daily_run.jobs_by_task["report"][5]
    return load.request["destination_table"]


def test_every_job_runs_in_location_and_project(daily_run):
    for job in daily_run.jobs:
        assert job.location == LOCATION
        assert job.project == PROJECT
        assert job.request["job_id_prefix"] == "textclf_"
    for job in daily_run.jobs:
        expected = {"job_id_prefix": "textclf_"}
        if job.kind == "load":
            expected["destination_table"] = _staging_table(daily_run)
        assert job.request == expected


def test_client_calls_in_task_order(daily_run):
    staging = _staging_table(daily_run)
    (check,) = [job.job_id for job in daily_run.jobs_by_task["check_source_data"]]
    (train,) = [job.job_id for job in daily_run.jobs_by_task["train_model"]]
    (create_model,) = [job.job_id for job in daily_run.jobs_by_task["import_model"]]
    (predict,) = [job.job_id for job in daily_run.jobs_by_task["predict"]]
    report = [job.job_id for job in daily_run.jobs_by_task["report"]]

    # The recorded expiry time of the staging table is checked with the durations load.
    calls = [call[:3] if call[0] == "update_table" else call for call in daily_run.calls]

    assert calls == [
        ("get_table", SOURCE),
        ("query", check),
        ("query", train),
        ("query", create_model),
        ("query", predict),
        ("get_job", predict, PROJECT, LOCATION),
        ("query", report[0]),
        ("get_job", report[0], PROJECT, LOCATION),
        ("query", report[1]),
        ("query", report[2]),
        ("query", report[3]),
        ("get_table", DURATIONS),
        ("query", report[4]),
        ("load_table_from_file", report[5], staging),
        ("get_table", staging),
        ("update_table", staging, ("expires",)),
        ("query", report[6]),
        ("delete_table", staging, True),
    ]


def test_clients_built_from_configured_connections(daily_run):
    # One warehouse per task, and a model store for the train, import and report tasks.
    assert len(daily_run.bigquery_hooks) == len(TASK_IDS)
    for hook in daily_run.bigquery_hooks:
        assert hook.kwargs == {
            "gcp_conn_id": WAREHOUSE_CONN_ID,
            "location": LOCATION,
            "impersonation_chain": [SERVICE_ACCOUNT],
            "use_legacy_sql": False,
        }
        assert hook.client_requests == [{"project_id": PROJECT, "location": LOCATION}]
    assert [hook.kwargs for hook in daily_run.gcs_hooks] == [{"gcp_conn_id": STORE_CONN_ID}] * 3


def test_check_sends_rendered_query_with_day_parameter(dag_module, daily_run):
    (check_query,) = daily_run.jobs_by_task["check_source_data"]

    assert check_query.query == _render("check_source_day.sql", dag_module.CONFIG)
    assert f"FROM `{SOURCE}`\n    WHERE review_date = @run_date" in check_query.query
    assert check_query.job_config.to_api_repr() == _query_config("check_source_data", RUN_DATE_PARAMETER)
    assert daily_run.returned["check_source_data"]["row_count"] == ROWS_PREDICTED
    assert daily_run.returned["check_source_data"]["training_example_count"] == TRAINING_EXAMPLE_COUNT


def test_training_examples_read_through_storage_api(google, dag_module, daily_run):
    (examples,) = daily_run.jobs_by_task["train_model"]

    assert examples.query == _render("training_examples.sql", dag_module.CONFIG)
    assert "WHERE review_date < @run_date" in examples.query
    assert examples.job_config.to_api_repr() == _query_config("train_model", RUN_DATE_PARAMETER)
    assert isinstance(examples.read_with, FakeReadClient)
    assert examples.read_with in google.read_clients
    assert examples.read_with.credentials is google.credentials


def test_model_upload_writes_marker_last(daily_run):
    uploads = [operation for operation in daily_run.storage_operations if operation[0] == "upload"]
    model_uploads = [uri for _, uri in uploads if uri.startswith(f"gs://{BUCKET}/{VERSION_PREFIX}/")]
    first_model_operations = daily_run.storage_operations[: len(model_uploads)]

    assert [operation[0] for operation in first_model_operations] == ["upload"] * len(model_uploads)
    assert [uri for _, uri in first_model_operations] == model_uploads
    assert model_uploads[-1] == f"gs://{BUCKET}/{VERSION_PREFIX}/_COMPLETE"
    assert model_uploads[:-1] == sorted(model_uploads[:-1])
    assert f"gs://{BUCKET}/{VERSION_PREFIX}/metrics.json" in model_uploads
    assert f"gs://{BUCKET}/{VERSION_PREFIX}/saved_model/saved_model.pb" in model_uploads
    assert f"gs://{BUCKET}/{VERSION_PREFIX}/saved_model/variables/variables.index" in model_uploads
    assert daily_run.returned["train_model"]["model_uri"] == f"gs://{BUCKET}/{VERSION_PREFIX}"


def test_import_fetches_model_and_creates_it(daily_run):
    model_uploads = {uri for kind, uri in daily_run.storage_operations if kind == "upload" and VERSION_PREFIX in uri}
    downloads = [uri for kind, uri in daily_run.storage_operations if kind == "download"]
    (create_model,) = daily_run.jobs_by_task["import_model"]

    assert set(downloads) == model_uploads
    assert len(downloads) == len(model_uploads)
    assert create_model.query == (
        f"CREATE OR REPLACE MODEL `{MODEL}`\n"
        f"OPTIONS (model_type = 'TENSORFLOW', model_path = '{MODEL_PATH}')"
    )
    assert create_model.job_config.to_api_repr() == {"query": {"useLegacySql": False}, "labels": _labels("import_model")}
    assert daily_run.returned["import_model"]["model"] == MODEL
    assert daily_run.returned["import_model"]["model_path"] == MODEL_PATH


def test_predict_job_replaces_day_partition(dag_module, daily_run):
    (predict,) = daily_run.jobs_by_task["predict"]

    assert predict.query == _render("predict.sql", dag_module.CONFIG)
    assert re.search(rf"ML\.PREDICT\(\s*MODEL `{re.escape(MODEL)}`,", predict.query)
    assert predict.job_config.to_api_repr() == (
        _partition_write_config("predict", f"predictions${VERSION}", RUN_DATE_PARAMETER, MODEL_VERSION_PARAMETER)
    )
    assert predict.result_kwargs == {"max_results": 0}
    returned = dict(daily_run.returned["predict"])
    assert returned.pop("duration_seconds") >= 0
    assert returned == {
        "predictions_table": PREDICTIONS,
        "rows_predicted": ROWS_PREDICTED,
        "model_version": VERSION,
        "run_day": RUN_DAY.isoformat(),
    }


def test_report_writes_day_row_and_reads_it_back(dag_module, daily_run):
    write, day_row, history, histogram, durations = daily_run.jobs_by_task["report"][:5]
    threshold = {"name": "low_confidence_threshold", "parameterType": {"type": "FLOAT64"}, "parameterValue": {"value": 0.6}}

    assert write.query == _render("report.sql", dag_module.CONFIG)
    assert write.job_config.to_api_repr() == (
        _partition_write_config("report", f"daily_report${VERSION}", RUN_DATE_PARAMETER, MODEL_VERSION_PARAMETER, threshold)
    )
    assert day_row.query == _render("report_day.sql", dag_module.CONFIG)
    assert day_row.job_config.to_api_repr() == _query_config("report", RUN_DATE_PARAMETER)
    assert history.query == _render("report_history.sql", dag_module.CONFIG)
    assert history.job_config.to_api_repr() == _query_config("report", RUN_DATE_PARAMETER, _int_parameter("history_days", 30))
    assert histogram.query == _render("probability_histogram.sql", dag_module.CONFIG)
    assert histogram.job_config.to_api_repr() == _query_config("report", RUN_DATE_PARAMETER, _int_parameter("bucket_count", 20))
    assert durations.query == _render("task_durations.sql", dag_module.CONFIG)
    assert durations.job_config.to_api_repr() == _query_config("report", RUN_DATE_PARAMETER, _int_parameter("history_days", 30))


def test_durations_loaded_into_day_partition(daily_run):
    load, script = daily_run.jobs_by_task["report"][5:]
    staging = _staging_table(daily_run)
    update = next(call for call in daily_run.calls if call[0] == "update_table")
    rows = load.loaded_table.to_pylist()

    assert re.fullmatch(rf"{re.escape(PROJECT)}\.textclf\._textclf_staging_task_durations_[0-9a-f]{{32}}", staging)
    assert load.job_config.to_api_repr() == {
        "load": {"sourceFormat": "PARQUET", "writeDisposition": "WRITE_TRUNCATE", "createDisposition": "CREATE_IF_NEEDED"},
        "labels": _labels("report"),
    }
    assert [row["task_id"] for row in rows] == TASK_IDS
    assert {row["run_date"] for row in rows} == {RUN_DAY}
    assert {row["dag_run_id"] for row in rows} == {RUN_ID}
    for row in rows[:-1]:
        assert row["duration_seconds"] == daily_run.returned[row["task_id"]]["duration_seconds"]
    assert dt.timedelta(hours=23) < update[3] - dt.datetime.now(dt.timezone.utc) <= dt.timedelta(days=1)
    assert script.query == (
        f"CREATE TABLE IF NOT EXISTS `{DURATIONS}`\n"
        f"PARTITION BY run_date\n"
        f"AS SELECT * FROM `{staging}` WHERE FALSE;\n"
        f"BEGIN TRANSACTION;\n"
        f"DELETE FROM `{DURATIONS}`\n"
        f"WHERE run_date IN (SELECT DISTINCT run_date FROM `{staging}`);\n"
        f"INSERT INTO `{DURATIONS}`\n"
        f"SELECT * FROM `{staging}`;\n"
        f"COMMIT TRANSACTION;"
    )
    assert script.job_config.to_api_repr() == {"query": {"useLegacySql": False}, "labels": _labels("report")}


def test_report_files_uploaded_after_model(google, daily_run):
    report_prefix = f"gs://{BUCKET}/{STORE_PREFIX}/reports/{RUN_DAY.isoformat()}"
    last_operations = daily_run.storage_operations[-len(REPORT_FILES) :]
    report_md = google.storage.objects[(BUCKET, f"{STORE_PREFIX}/reports/{RUN_DAY.isoformat()}/report.md")]
    summary = json.loads(google.storage.objects[(BUCKET, f"{STORE_PREFIX}/reports/{RUN_DAY.isoformat()}/summary.json")])

    assert last_operations == [("upload", f"{report_prefix}/{name}") for name in REPORT_FILES]
    assert report_md.decode("utf-8").startswith("# textclf daily report: 2026-11-30")
    assert summary["rows_predicted"] == ROWS_PREDICTED
    assert summary["model_version"] == VERSION
    assert daily_run.returned["report"]["report_uri"] == report_prefix
    assert daily_run.returned["report"]["slow_tasks"] == []


def test_sql_text_carries_no_values(daily_run):
    for job in daily_run.jobs:
        if job.query is None:
            continue
        # The model name and path contain the model version, but as identifiers, validated before use.
        text = job.query.replace(MODEL, "").replace(MODEL_PATH, "")

        assert RUN_DAY.isoformat() not in text
        assert VERSION not in text
        assert "2026" not in text
        assert str(ROWS_PREDICTED) not in text


def test_rerun_of_predict_sends_identical_job(google, dag_module, daily_run):
    (first,) = daily_run.jobs_by_task["predict"]
    google.client.add_result(pa.table({"review_id": list(range(ROWS_PREDICTED))}))
    ti = FakeTaskInstance()
    ti.returned["import_model"] = daily_run.returned["import_model"]

    returned = _run_task(dag_module, "predict", ti)

    second = google.client.jobs[-1]
    assert second is not first
    assert second.query == first.query
    assert second.job_config.to_api_repr() == first.job_config.to_api_repr()
    assert second.location == first.location
    assert second.project == first.project
    assert second.request == {"job_id_prefix": "textclf_"}
    assert returned["rows_predicted"] == ROWS_PREDICTED
