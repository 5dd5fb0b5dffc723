"""Tests of BigQueryWarehouse against a fake BigQuery client that records each job request."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest
from google.api_core.exceptions import BadRequest, Forbidden

from fakes_gcp import FakeBigQueryClient, FakeReadClient
from textclf.identifiers import TableRef
from textclf.warehouse.base import WarehouseError
from textclf.warehouse.bigquery import BigQueryWarehouse, sanitize_labels, validate_model_path
from textclf.warehouse.bigquery_params import to_query_parameters

PROJECT = "textclf-test"
LABELS = {"dag_id": "textclf_daily", "task_id": "predict"}
PREDICTIONS = TableRef(PROJECT, "textclf", "predictions")
MODEL = TableRef(PROJECT, "textclf", "textclf_model_20141201")
MODEL_PATH = "gs://textclf-models/store/models/20141201/saved_model/*"


@pytest.fixture
def client() -> FakeBigQueryClient:
    return FakeBigQueryClient(project=PROJECT)


@pytest.fixture
def read_client() -> FakeReadClient:
    return FakeReadClient()


@pytest.fixture
def warehouse(client: FakeBigQueryClient, read_client: FakeReadClient) -> BigQueryWarehouse:
    return BigQueryWarehouse(project=PROJECT, location="US", labels=LABELS, client=client, read_client=read_client)


def test_query_sends_typed_parameters_and_labels(warehouse, client):
    client.add_result(pa.table({"n": [3]}))

    warehouse.query(
        "SELECT COUNT(*) AS n FROM t WHERE d = @run_date AND k IN UNNEST(@kinds) AND s > @min_score",
        {"run_date": dt.date(2014, 12, 1), "kinds": ["a", "b"], "min_score": 0.5},
    )

    job = client.jobs[0]
    assert job.query == "SELECT COUNT(*) AS n FROM t WHERE d = @run_date AND k IN UNNEST(@kinds) AND s > @min_score"
    assert job.location == "US"
    assert job.project == PROJECT
    assert job.request == {"job_id_prefix": "textclf_"}
    assert job.job_config.to_api_repr() == {
        "query": {
            "useLegacySql": False,
            "queryParameters": [
                {"name": "run_date", "parameterType": {"type": "DATE"}, "parameterValue": {"value": "2014-12-01"}},
                {
                    "name": "kinds",
                    "parameterType": {"type": "ARRAY", "arrayType": {"type": "STRING"}},
                    "parameterValue": {"arrayValues": [{"value": "a"}, {"value": "b"}]},
                },
                {"name": "min_score", "parameterType": {"type": "FLOAT64"}, "parameterValue": {"value": 0.5}},
            ],
            "parameterMode": "NAMED",
        },
        "labels": {"dag_id": "textclf_daily", "task_id": "predict"},
    }


def test_query_reads_through_storage_read_api(warehouse, client, read_client):
    client.add_result(pa.table({"label": ["pos", "neg"], "n": [2, 1]}))

    result = warehouse.query("SELECT label, n FROM t")

    assert result.to_pylist() == [{"label": "pos", "n": 2}, {"label": "neg", "n": 1}]
    assert client.jobs[0].read_with is read_client


def test_parameters_typed_for_every_supported_type():
    parameters = to_query_parameters(
        {
            "flag": True,
            "count": 7,
            "share": 0.25,
            "name": "reviews",
            "day": dt.date(2014, 12, 1),
            "at": dt.datetime(2014, 12, 1, 9, 30, tzinfo=dt.timezone.utc),
            "ids": [1, 2],
        }
    )

    types = {parameter.name: parameter.to_api_repr()["parameterType"] for parameter in parameters}
    assert types["flag"] == {"type": "BOOL"}
    assert types["count"] == {"type": "INT64"}
    assert types["share"] == {"type": "FLOAT64"}
    assert types["name"] == {"type": "STRING"}
    assert types["day"] == {"type": "DATE"}
    assert types["at"] == {"type": "TIMESTAMP"}
    assert types["ids"] == {"type": "ARRAY", "arrayType": {"type": "INT64"}}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "is None"),
        ([], "empty list"),
        ([1, "a"], "mixes element types"),
        (b"bytes", "unsupported type bytes"),
    ],
)
def test_parameters_reject_untyped_values(value, message):
    with pytest.raises(ValueError, match=message):
        to_query_parameters({"value": value})


def test_write_partition_replaces_one_day(warehouse, client):
    client.add_result(pa.table({"review_id": [1, 2, 3]}))

    rows = warehouse.write_partition(
        "SELECT * FROM ML.PREDICT(MODEL m, (SELECT * FROM s WHERE d = @run_date))",
        {"run_date": dt.date(2014, 12, 1), "threshold": 0.6},
        table=PREDICTIONS,
        partition_column="run_date",
        partition_date=dt.date(2014, 12, 1),
    )

    assert rows == 3
    job = client.jobs[0]
    assert job.query == "SELECT * FROM ML.PREDICT(MODEL m, (SELECT * FROM s WHERE d = @run_date))"
    assert job.location == "US"
    assert job.project == PROJECT
    assert job.job_config.to_api_repr() == {
        "query": {
            "destinationTable": {"projectId": PROJECT, "datasetId": "textclf", "tableId": "predictions$20141201"},
            "writeDisposition": "WRITE_TRUNCATE",
            "createDisposition": "CREATE_IF_NEEDED",
            "timePartitioning": {"type": "DAY", "field": "run_date"},
            "useLegacySql": False,
            "queryParameters": [
                {"name": "run_date", "parameterType": {"type": "DATE"}, "parameterValue": {"value": "2014-12-01"}},
                {"name": "threshold", "parameterType": {"type": "FLOAT64"}, "parameterValue": {"value": 0.6}},
            ],
            "parameterMode": "NAMED",
        },
        "labels": {"dag_id": "textclf_daily", "task_id": "predict"},
    }
    assert job.result_kwargs == {"max_results": 0}


def test_submit_partition_write_does_not_wait(warehouse, client):
    job_id = warehouse.submit_partition_write(
        "SELECT 1 AS x, @run_date AS run_date",
        {"run_date": dt.date(2014, 12, 1)},
        table=PREDICTIONS,
        partition_column="run_date",
        partition_date=dt.date(2014, 12, 1),
    )

    assert job_id == "textclf_job_1"
    assert client.jobs[0].result_kwargs is None


def test_finish_partition_write_waits_on_job_id(warehouse, client):
    client.add_result(pa.table({"x": [1, 2]}))
    job_id = warehouse.submit_partition_write(
        "SELECT 1", None, table=PREDICTIONS, partition_column="run_date", partition_date=dt.date(2014, 12, 1)
    )

    rows = warehouse.finish_partition_write(job_id)

    assert rows == 2
    assert ("get_job", job_id, PROJECT, "US") in client.calls


def test_write_partition_failure_names_job_and_fix(warehouse, client):
    client.add_error(BadRequest("Query error: Unrecognized name: txt at [1:8]"))

    with pytest.raises(WarehouseError) as raised:
        warehouse.write_partition(
            "SELECT txt", None, table=PREDICTIONS, partition_column="run_date", partition_date=dt.date(2014, 12, 1)
        )

    message = str(raised.value)
    assert "BigQuery job textclf_job_1 (partition write) failed" in message
    assert "Unrecognized name: txt" in message
    assert "project textclf-test, location US" in message


def test_write_partition_rejects_datetime_partition(warehouse):
    with pytest.raises(ValueError, match="must be a datetime.date"):
        warehouse.write_partition(
            "SELECT 1", None, table=PREDICTIONS, partition_column="run_date", partition_date=dt.datetime(2014, 12, 1)
        )


def test_cancel_sends_job_id_and_location(warehouse, client):
    warehouse.cancel("textclf_job_42")

    assert client.calls == [("cancel_job", "textclf_job_42", PROJECT, "US")]


def test_load_partitions_uses_one_transaction(warehouse, client, monkeypatch):
    monkeypatch.setattr("textclf.warehouse.bigquery.uuid.uuid4", lambda: type("U", (), {"hex": "abc123"})())
    data = pa.table(
        {
            "review_id": [1, 2, 3],
            "review_date": pa.array([dt.date(2014, 12, 2), dt.date(2014, 12, 1), dt.date(2014, 12, 2)], pa.date32()),
        }
    )
    target = TableRef(PROJECT, "textclf", "reviews")

    rows_per_day = warehouse.load_partitions(data, table=target, partition_column="review_date")

    assert rows_per_day == {dt.date(2014, 12, 1): 1, dt.date(2014, 12, 2): 2}
    staging = f"{PROJECT}.textclf._textclf_staging_reviews_abc123"
    load, script = client.jobs
    assert load.kind == "load"
    assert load.request == {"destination_table": staging, "job_id_prefix": "textclf_"}
    assert load.location == "US"
    assert load.project == PROJECT
    assert load.loaded_table.equals(data)
    assert load.job_config.to_api_repr() == {
        "load": {"sourceFormat": "PARQUET", "writeDisposition": "WRITE_TRUNCATE", "createDisposition": "CREATE_IF_NEEDED"},
        "labels": {"dag_id": "textclf_daily", "task_id": "predict"},
    }
    assert script.query == (
        f"CREATE TABLE IF NOT EXISTS `{PROJECT}.textclf.reviews`\n"
        "PARTITION BY review_date\n"
        f"AS SELECT * FROM `{staging}` WHERE FALSE;\n"
        "BEGIN TRANSACTION;\n"
        f"DELETE FROM `{PROJECT}.textclf.reviews`\n"
        f"WHERE review_date IN (SELECT DISTINCT review_date FROM `{staging}`);\n"
        f"INSERT INTO `{PROJECT}.textclf.reviews`\n"
        f"SELECT * FROM `{staging}`;\n"
        "COMMIT TRANSACTION;"
    )
    assert script.job_config.to_api_repr() == {
        "query": {"useLegacySql": False},
        "labels": {"dag_id": "textclf_daily", "task_id": "predict"},
    }
    update = [call for call in client.calls if call[0] == "update_table"][0]
    assert update[:3] == ("update_table", staging, ("expires",))
    assert update[3] > dt.datetime.now(dt.timezone.utc)
    assert client.calls[-1] == ("delete_table", staging, True)


def test_load_partitions_drops_staging_after_failure(warehouse, client):
    client.add_error(None)
    client.add_error(BadRequest("Transaction aborted"))
    data = pa.table({"review_date": pa.array([dt.date(2014, 12, 1)], pa.date32())})

    with pytest.raises(WarehouseError, match="Transaction aborted"):
        warehouse.load_partitions(data, table=TableRef(PROJECT, "textclf", "reviews"), partition_column="review_date")

    assert client.calls[-1][0] == "delete_table"
    assert client.calls[-1][1].startswith(f"{PROJECT}.textclf._textclf_staging_reviews_")


@pytest.mark.parametrize(
    ("column", "message"),
    [
        (pa.array(["2014-12-01"]), "has type string, expected a date"),
        (pa.array([None], pa.date32()), "has 1 NULL values"),
    ],
)
def test_load_partitions_rejects_bad_partition_column(warehouse, client, column, message):
    data = pa.table({"review_date": column})

    with pytest.raises(WarehouseError, match=message):
        warehouse.load_partitions(data, table=TableRef(PROJECT, "textclf", "reviews"), partition_column="review_date")

    assert client.jobs == []


def test_load_partitions_rejects_missing_column(warehouse, client):
    with pytest.raises(WarehouseError, match="has no column 'review_date'"):
        warehouse.load_partitions(
            pa.table({"x": [1]}), table=TableRef(PROJECT, "textclf", "reviews"), partition_column="review_date"
        )


def test_create_model_ddl_text(warehouse, client):
    warehouse.create_model(MODEL, MODEL_PATH)

    job = client.jobs[0]
    assert job.query == (
        f"CREATE OR REPLACE MODEL `{PROJECT}.textclf.textclf_model_20141201`\n"
        "OPTIONS (model_type = 'TENSORFLOW', model_path = 'gs://textclf-models/store/models/20141201/saved_model/*')"
    )
    assert job.location == "US"
    assert job.project == PROJECT
    assert job.job_config.to_api_repr() == {
        "query": {"useLegacySql": False},
        "labels": {"dag_id": "textclf_daily", "task_id": "predict"},
    }


def test_create_model_without_replace(warehouse, client):
    warehouse.create_model(MODEL, MODEL_PATH, replace=False)

    assert client.jobs[0].query.startswith(f"CREATE MODEL `{PROJECT}.textclf.textclf_model_20141201`\n")


@pytest.mark.parametrize(
    "model_path",
    [
        "gs://bucket/models/x/saved_model",
        "gs://bucket/models/x'); DROP TABLE t; --/*",
        "s3://bucket/models/saved_model/*",
        "gs://Bucket/models/saved_model/*",
        "gs://bucket/models/saved model/*",
        "gs://bucket/*",
    ],
)
def test_create_model_rejects_unsafe_path(warehouse, client, model_path):
    with pytest.raises(WarehouseError, match="Invalid model path"):
        warehouse.create_model(MODEL, model_path)

    assert client.jobs == []


def test_model_path_validation_accepts_store_path():
    assert validate_model_path(MODEL_PATH) == MODEL_PATH


@pytest.mark.parametrize(
    ("error", "hint"),
    [
        (Forbidden("Access Denied: BigQuery BigQuery: Permission denied while globbing file pattern."), "Storage Object Viewer on gs://textclf-models"),
        (BadRequest("Cannot read and write in different locations: source: EU, destination: US"), "must be in the same location as the job (US)"),
        (BadRequest("Model is too large"), "larger than BigQuery ML accepts"),
        (BadRequest("Op type not registered 'StaticRegexReplace'; unsupported op"), "python -m textclf check-model"),
        (BadRequest("Something else went wrong"), "Check that the SavedModel at that path is complete"),
    ],
)
def test_create_model_errors_carry_hint(warehouse, client, error, hint):
    client.add_error(error)

    with pytest.raises(WarehouseError) as raised:
        warehouse.create_model(MODEL, MODEL_PATH)

    message = str(raised.value)
    assert message.startswith(f"Creating model {PROJECT}.textclf.textclf_model_20141201 from {MODEL_PATH} failed")
    assert "BigQuery job textclf_job_1" in message
    assert hint in message


def test_table_exists(warehouse, client):
    client.tables.add(str(PREDICTIONS))

    assert warehouse.table_exists(PREDICTIONS) is True
    assert warehouse.table_exists(PREDICTIONS.with_table("missing")) is False


def test_execute_runs_script_with_parameters(warehouse, client):
    warehouse.execute("DELETE FROM t WHERE d = @run_date; SELECT 1;", {"run_date": dt.date(2014, 12, 1)})

    job = client.jobs[0]
    assert job.query == "DELETE FROM t WHERE d = @run_date; SELECT 1;"
    assert job.job_config.query_parameters[0].to_api_repr() == {
        "name": "run_date",
        "parameterType": {"type": "DATE"},
        "parameterValue": {"value": "2014-12-01"},
    }
    assert job.result_kwargs == {}


def test_labels_sanitized_to_bigquery_rules():
    labels = sanitize_labels({"DAG_ID": "TextClf.Daily", "1st": "a b", "task": "x" * 80})

    assert labels == {"dag_id": "textclf_daily", "l_1st": "a_b", "task": "x" * 63}


def test_labels_capped_at_64():
    labels = sanitize_labels({f"k{i}": "v" for i in range(70)})

    assert len(labels) == 64


def test_clients_built_lazily_from_hook(monkeypatch):
    built = {}

    class FakeHook:
        project_id = "hook-project"

        def __init__(self, **kwargs):
            built["hook"] = kwargs

        def get_client(self, project_id, location):
            built["client"] = {"project_id": project_id, "location": location}
            return FakeBigQueryClient(project=project_id)

    monkeypatch.setattr("airflow.providers.google.cloud.hooks.bigquery.BigQueryHook", FakeHook)
    warehouse = BigQueryWarehouse(gcp_conn_id="textclf_warehouse", location="EU", impersonation_chain="sa@p.iam")

    assert built == {}
    assert warehouse.job_project == "hook-project"
    assert built["hook"] == {
        "gcp_conn_id": "textclf_warehouse",
        "location": "EU",
        "impersonation_chain": "sa@p.iam",
        "use_legacy_sql": False,
    }
    assert built["client"] == {"project_id": "hook-project", "location": "EU"}


def test_table_columns_read_schema_without_job():
    from google.cloud.bigquery import SchemaField

    client = FakeBigQueryClient(
        project=PROJECT,
        schemas={
            f"{PROJECT}.textclf.reviews": [
                SchemaField("review_id", "INTEGER"),
                SchemaField("text", "STRING"),
                SchemaField("score", "FLOAT"),
                SchemaField("tags", "STRING", mode="REPEATED"),
                SchemaField("review_date", "DATE"),
            ]
        },
    )
    warehouse = BigQueryWarehouse(project=PROJECT, location="US", client=client, read_client=FakeReadClient())

    columns = warehouse.table_columns(TableRef(PROJECT, "textclf", "reviews"))

    assert columns == {
        "review_id": "INT64",
        "text": "STRING",
        "score": "FLOAT64",
        "tags": "ARRAY<STRING>",
        "review_date": "DATE",
    }
    assert client.jobs == []
    assert warehouse.table_columns(TableRef(PROJECT, "textclf", "missing")) is None
