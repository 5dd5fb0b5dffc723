"""Tests of PredictOperator's deferrable mode and on_kill, against a fake BigQuery client."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import pyarrow as pa
import pytest
from airflow.providers.google.cloud.hooks import bigquery as bigquery_hooks
from airflow.providers.google.cloud.triggers.bigquery import BigQueryInsertJobTrigger
from airflow.sdk import DAG
from airflow.sdk.exceptions import TaskDeferred

from fakes_gcp import FakeBigQueryClient, FakeBigQueryHook
from textclf.config import PipelineConfig
from textclf.operators.predict import PredictOperator
from textclf.warehouse.base import WarehouseError

PROJECT = "textclf-prod"
LOCATION = "asia-northeast3"
CONN_ID = "textclf_bigquery"
SERVICE_ACCOUNT = "textclf-runner@textclf-prod.iam.gserviceaccount.com"
RUN_DAY = dt.date(2026, 11, 30)
VERSION = "20261130"
PREDICT_SQL = "SELECT 1 AS review_id, @model_version AS model_version, @run_date AS run_date"
ROWS_PREDICTED = 42


@pytest.fixture
def client(monkeypatch) -> FakeBigQueryClient:
    client = FakeBigQueryClient(project=PROJECT)
    monkeypatch.setattr(bigquery_hooks, "BigQueryHook", lambda **kwargs: FakeBigQueryHook(client, **kwargs))
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{CONN_ID.upper()}",
        json.dumps({"conn_type": "google_cloud_platform", "extra": {"project": PROJECT}}),
    )
    return client


def _config(**values: Any) -> PipelineConfig:
    return PipelineConfig(
        project=PROJECT,
        warehouse_conn_id=CONN_ID,
        location=LOCATION,
        impersonation_chain=(SERVICE_ACCOUNT,),
        **values,
    )


def _operator(config: PipelineConfig | None = None, **kwargs: Any) -> PredictOperator:
    with DAG("textclf_daily", schedule=None):
        return PredictOperator(task_id="predict", config=config or _config(), sql=PREDICT_SQL, **kwargs)


class FakeTaskInstance:
    def __init__(self) -> None:
        self.try_number = 1

    def xcom_pull(self, task_ids: str | None = None, **kwargs: Any) -> Any:
        return {"model_version": VERSION} if task_ids == "import_model" else None


def _context() -> dict[str, Any]:
    return {"params": {"run_date": RUN_DAY.isoformat()}, "ti": FakeTaskInstance()}


def test_deferrable_defers_on_submitted_job(client):
    operator = _operator(deferrable=True, poll_interval=2.5)
    before = time.time()

    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(_context())

    job = client.jobs[0]
    assert client.calls == [("query", job.job_id)]
    assert job.query == PREDICT_SQL
    assert job.job_config.to_api_repr()["query"]["destinationTable"] == {
        "projectId": PROJECT,
        "datasetId": "textclf",
        "tableId": "predictions$20261130",
    }
    assert job.job_config.to_api_repr()["query"]["writeDisposition"] == "WRITE_TRUNCATE"
    assert job.result_kwargs is None
    assert deferred.value.method_name == "execute_complete"
    assert isinstance(deferred.value.trigger, BigQueryInsertJobTrigger)
    assert deferred.value.trigger.serialize() == (
        "airflow.providers.google.cloud.triggers.bigquery.BigQueryInsertJobTrigger",
        {
            "conn_id": CONN_ID,
            "job_id": job.job_id,
            "dataset_id": None,
            "project_id": PROJECT,
            "location": LOCATION,
            "table_id": None,
            "poll_interval": 2.5,
            "impersonation_chain": [SERVICE_ACCOUNT],
            "cancel_on_kill": True,
        },
    )
    next_kwargs = dict(deferred.value.kwargs)
    started_at = next_kwargs.pop("started_at")
    assert next_kwargs == {"job_id": job.job_id, "run_day": "2026-11-30", "model_version": VERSION}
    assert before <= started_at <= time.time()


def test_execute_complete_returns_rows_written(client):
    client.add_result(pa.table({"review_id": list(range(ROWS_PREDICTED))}))
    job = client.query(PREDICT_SQL)
    operator = _operator(deferrable=True)

    returned = operator.execute_complete(
        _context(),
        {"status": "success", "message": "Job completed", "job_id": job.job_id},
        job_id=job.job_id,
        run_day="2026-11-30",
        model_version=VERSION,
        started_at=time.time() - 30,
    )

    duration = returned.pop("duration_seconds")
    assert returned == {
        "predictions_table": f"{PROJECT}.textclf.predictions",
        "rows_predicted": ROWS_PREDICTED,
        "model_version": VERSION,
        "run_day": "2026-11-30",
    }
    assert 30 <= duration < 60
    assert client.calls[-1] == ("get_job", job.job_id, PROJECT, LOCATION)
    assert job.result_kwargs == {"max_results": 0}


def test_execute_complete_raises_on_error_event(client):
    operator = _operator(deferrable=True)

    with pytest.raises(WarehouseError, match=r"BigQuery job textclf_job_7 .* failed: Syntax error: Unexpected") as raised:
        operator.execute_complete(
            _context(),
            {"status": "error", "message": "Syntax error: Unexpected keyword"},
            job_id="textclf_job_7",
            run_day="2026-11-30",
            model_version=VERSION,
            started_at=time.time(),
        )

    assert f"{PROJECT}.textclf.predictions" in str(raised.value)
    assert client.calls == []


def test_synchronous_predict_waits_for_job(client):
    client.add_result(pa.table({"review_id": list(range(ROWS_PREDICTED))}))
    operator = _operator(deferrable=False)

    returned = operator.execute(_context())

    job = client.jobs[0]
    assert client.calls == [("query", job.job_id), ("get_job", job.job_id, PROJECT, LOCATION)]
    assert returned["rows_predicted"] == ROWS_PREDICTED
    assert returned["model_version"] == VERSION


def test_on_kill_cancels_running_job(client):
    operator = _operator(deferrable=False)
    client.while_waiting = lambda job: operator.on_kill()

    operator.execute(_context())

    job_id = client.jobs[0].job_id
    assert client.calls == [
        ("query", job_id),
        ("get_job", job_id, PROJECT, LOCATION),
        ("cancel_job", job_id, PROJECT, LOCATION),
    ]


def test_on_kill_after_job_cancels_nothing(client):
    operator = _operator(deferrable=False)
    operator.execute(_context())

    operator.on_kill()

    assert [call[0] for call in client.calls] == ["query", "get_job"]


def test_deferrable_default_from_config_extra():
    operator = _operator(_config(extra={"deferrable": True}))

    assert operator.deferrable is True


def test_deferrable_argument_overrides_config_extra():
    operator = _operator(_config(extra={"deferrable": True}), deferrable=False)

    assert operator.deferrable is False


def test_deferrable_defaults_to_off():
    operator = _operator()

    assert operator.deferrable is False


def test_invalid_deferrable_in_config_rejected():
    with pytest.raises(ValueError, match=r"`deferrable` must be true or false, got 'yes'"):
        _operator(_config(extra={"deferrable": "yes"}))


def test_invalid_poll_interval_rejected():
    with pytest.raises(ValueError, match=r"`poll_interval` must be a positive number of seconds, got 0"):
        _operator(poll_interval=0)


def test_embedded_warehouse_ignores_deferrable(monkeypatch, tmp_path, capsys):
    database = tmp_path / "warehouse.duckdb"
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps({"conn_type": "duckdb", "host": str(database)}))
    operator = _operator(deferrable=True)

    returned = operator.execute(_context())

    # Outside the task runner, Airflow's task loggers write to standard output.
    output = capsys.readouterr().out
    assert returned["rows_predicted"] == 1
    assert returned["model_version"] == VERSION
    assert output.count("Ignoring deferrable: the embedded warehouse predicts inside the task") == 1
