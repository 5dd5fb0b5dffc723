"""Read training examples from BigQuery inside a training job, with no Airflow installed.

A Vertex AI custom job runs ``python -m textclf train --examples-query ...`` in Google's prebuilt
TensorFlow container, which has neither Airflow nor an Airflow connection, so this module uses
google-cloud-bigquery with the job's own service account (Application Default Credentials).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from textclf.warehouse.bigquery_params import to_query_parameters

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

# JSON has no date type, so a date travels as {"type": "DATE", "value": "2014-12-01"}.
_TYPED_VALUE_PARSERS = {
    "DATE": dt.date.fromisoformat,
    "TIMESTAMP": dt.datetime.fromisoformat,
    "STRING": str,
    "INT64": int,
    "FLOAT64": float,
    "BOOL": bool,
}


def parameters_from_json(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Turn decoded ``--query-parameters`` JSON into Python values that have a BigQuery type.

    A plain JSON string, number, boolean or list keeps its own type. An object
    ``{"type": "DATE", "value": "2014-12-01"}`` becomes a ``datetime.date``, and likewise for
    TIMESTAMP (ISO 8601), STRING, INT64, FLOAT64 and BOOL.

    :param parameters: the decoded JSON object.
    """
    values: dict[str, Any] = {}
    for name, value in parameters.items():
        if isinstance(value, Mapping):
            type_name = str(value.get("type", "")).upper()
            if type_name not in _TYPED_VALUE_PARSERS or "value" not in value:
                raise ValueError(
                    f"Query parameter `{name}` must be a JSON value or an object "
                    f'{{"type": T, "value": V}} with T one of {sorted(_TYPED_VALUE_PARSERS)}, got {value!r}.'
                )
            values[name] = _TYPED_VALUE_PARSERS[type_name](value["value"])
        else:
            values[name] = value
    return values


def parameters_to_json(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Encode query parameters as JSON-safe values that :func:`parameters_from_json` decodes back.

    :param parameters: names mapped to str, int, float, bool, date, datetime or lists of those.
    """
    encoded: dict[str, Any] = {}
    for name, value in parameters.items():
        if isinstance(value, dt.datetime):
            encoded[name] = {"type": "TIMESTAMP", "value": value.isoformat()}
        elif isinstance(value, dt.date):
            encoded[name] = {"type": "DATE", "value": value.isoformat()}
        else:
            encoded[name] = value
    return encoded


def read_examples(
    sql: str,
    parameters: Mapping[str, Any],
    project: str,
    location: str,
    *,
    client: Any = None,
    read_client: Any = None,
) -> pa.Table:
    """Run the examples query and return its result as an Arrow table via the Storage Read API.

    :param sql: the rendered BigQuery query of training examples.
    :param parameters: its parameters, as decoded JSON (see :func:`parameters_from_json`).
    :param project: project that runs and bills the query job.
    :param location: BigQuery location of the source tables.
    :param client: a ready ``bigquery.Client``; built with default credentials when None.
    :param read_client: a ready ``BigQueryReadClient``; built with default credentials when None.
    """
    from google.api_core.exceptions import GoogleAPICallError
    from google.cloud import bigquery

    if client is None:
        client = bigquery.Client(project=project, location=location)
    if read_client is None:
        from google.cloud import bigquery_storage

        read_client = bigquery_storage.BigQueryReadClient()

    job_config = bigquery.QueryJobConfig(
        query_parameters=to_query_parameters(parameters_from_json(parameters)), use_legacy_sql=False
    )
    job = client.query(sql, job_config=job_config, location=location, project=project, job_id_prefix="textclf_train_")
    log.info("BigQuery job %s started: reading training examples in %s", job.job_id, location)
    try:
        rows = job.result()
    except GoogleAPICallError as error:
        raise RuntimeError(
            f"BigQuery job {job.job_id} reading training examples failed: {error.message}. Check that the "
            f"job's service account has BigQuery Job User on {project} and BigQuery Data Viewer on the source."
        ) from error

    table = rows.to_arrow(bqstorage_client=read_client)
    log.info("BigQuery job %s returned %s training examples", job.job_id, table.num_rows)
    return table
