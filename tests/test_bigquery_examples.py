"""Tests of reading training examples from BigQuery inside a training job."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest
from google.api_core.exceptions import Forbidden

from fakes_gcp import FakeBigQueryClient, FakeReadClient
from textclf.training.bigquery_examples import parameters_from_json, parameters_to_json, read_examples


def test_read_examples_sends_typed_date_parameter():
    client = FakeBigQueryClient(project="textclf-prod")
    read_client = FakeReadClient()
    client.add_result(pa.table({"text": ["good"], "label": ["pos"]}))

    table = read_examples(
        "SELECT text, label FROM t WHERE d < @run_date",
        {"run_date": {"type": "DATE", "value": "2014-12-01"}, "limit": 10},
        "textclf-prod",
        "US",
        client=client,
        read_client=read_client,
    )

    assert table.to_pylist() == [{"text": "good", "label": "pos"}]
    job = client.jobs[0]
    assert job.query == "SELECT text, label FROM t WHERE d < @run_date"
    assert job.location == "US"
    assert job.project == "textclf-prod"
    assert job.request == {"job_id_prefix": "textclf_train_"}
    assert job.read_with is read_client
    assert job.job_config.to_api_repr() == {
        "query": {
            "useLegacySql": False,
            "queryParameters": [
                {"name": "run_date", "parameterType": {"type": "DATE"}, "parameterValue": {"value": "2014-12-01"}},
                {"name": "limit", "parameterType": {"type": "INT64"}, "parameterValue": {"value": "10"}},
            ],
            "parameterMode": "NAMED",
        }
    }


def test_read_examples_failure_names_job():
    client = FakeBigQueryClient(project="textclf-prod")
    client.add_error(Forbidden("Access Denied: Table textclf-prod:textclf.reviews"))

    with pytest.raises(RuntimeError, match="BigQuery job textclf_job_1 reading training examples failed: Access Denied"):
        read_examples("SELECT 1", {}, "textclf-prod", "US", client=client, read_client=FakeReadClient())


def test_parameters_json_round_trip():
    parameters = {"run_date": dt.date(2014, 12, 1), "at": dt.datetime(2014, 12, 1, 9, 30), "n": 3, "kinds": ["a"]}

    encoded = parameters_to_json(parameters)

    assert encoded == {
        "run_date": {"type": "DATE", "value": "2014-12-01"},
        "at": {"type": "TIMESTAMP", "value": "2014-12-01T09:30:00"},
        "n": 3,
        "kinds": ["a"],
    }
    assert parameters_from_json(encoded) == parameters


def test_parameters_json_rejects_unknown_type():
    with pytest.raises(ValueError, match="Query parameter `d` must be a JSON value or an object"):
        parameters_from_json({"d": {"type": "GEOGRAPHY", "value": "POINT(0 0)"}})
