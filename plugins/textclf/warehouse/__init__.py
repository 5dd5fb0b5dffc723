"""Warehouse backends behind one interface, picked by an Airflow connection.

A connection of type ``duckdb`` selects the embedded warehouse; its host (or the ``path`` key of its
extra) names the database file, and the ``predict_batch_size`` key of its extra sets the rows per
ML.PREDICT batch. A connection of type ``google_cloud_platform`` selects BigQuery. When
the default connection id is not defined at all, the embedded warehouse in ``$TEXTCLF_HOME`` is used,
so a laptop runs the pipeline with no set-up.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from textclf.config import DEFAULT_WAREHOUSE_CONN_ID, textclf_home
from textclf.warehouse.base import QueryParameters, Warehouse, WarehouseError

if TYPE_CHECKING:
    from airflow.sdk import Connection

__all__ = ["QueryParameters", "Warehouse", "WarehouseError", "get_warehouse", "open_embedded"]

log = logging.getLogger(__name__)

EMBEDDED_CONN_TYPES = ("duckdb",)
BIGQUERY_CONN_TYPES = ("google_cloud_platform", "gcpbigquery", "google-cloud-platform")


def open_embedded(database_path: str | None = None, *, predict_batch_size: int | None = None) -> Warehouse:
    """Open the embedded DuckDB warehouse at ``database_path``, default ``$TEXTCLF_HOME/warehouse.duckdb``.

    :param database_path: the DuckDB database file.
    :param predict_batch_size: rows per batch that ML.PREDICT sends through a model; larger batches
        predict faster and take more memory.
    """
    from textclf.warehouse.embedded import EmbeddedWarehouse

    return EmbeddedWarehouse(database_path or textclf_home() / "warehouse.duckdb", predict_batch_size=predict_batch_size)


def get_warehouse(
    conn_id: str = DEFAULT_WAREHOUSE_CONN_ID,
    *,
    project: str | None = None,
    location: str | None = None,
    labels: Mapping[str, str] | None = None,
    impersonation_chain: Sequence[str] | None = None,
) -> Warehouse:
    """Return the warehouse that the Airflow connection ``conn_id`` selects.

    :param conn_id: Airflow connection id.
    :param project: default Google Cloud project for BigQuery jobs.
    :param location: BigQuery location of the jobs.
    :param labels: BigQuery job labels, e.g. the DAG and task ids.
    :param impersonation_chain: service accounts that BigQuery jobs impersonate, in order.
    """
    connection = _find_connection(conn_id)
    if connection is None:
        if conn_id != DEFAULT_WAREHOUSE_CONN_ID:
            raise WarehouseError(
                f"Airflow connection {conn_id!r} not found. Define it (type 'duckdb' with the database file as host, "
                f"or type 'google_cloud_platform'), or set `warehouse_conn_id` to an existing connection."
            )
        log.info("Connection %r is not defined; using the embedded warehouse in %s", conn_id, textclf_home())
        return open_embedded()

    conn_type = (connection.conn_type or "").lower()
    if conn_type in EMBEDDED_CONN_TYPES:
        extra = connection.extra_dejson or {}
        path = connection.host or extra.get("path")
        batch_size = extra.get("predict_batch_size")
        log.info("Connection %r selects the embedded warehouse %s", conn_id, path or "(default path)")
        return open_embedded(path, predict_batch_size=int(batch_size) if batch_size is not None else None)
    if conn_type in BIGQUERY_CONN_TYPES:
        from textclf.warehouse.bigquery import BigQueryWarehouse

        log.info("Connection %r selects BigQuery (project %s, location %s)", conn_id, project, location)
        return BigQueryWarehouse(
            gcp_conn_id=conn_id,
            project=project,
            location=location,
            labels=labels,
            impersonation_chain=list(impersonation_chain) if impersonation_chain else None,
        )
    raise WarehouseError(
        f"Airflow connection {conn_id!r} has type {connection.conn_type!r}, which selects no warehouse. "
        f"Use type 'duckdb' for the embedded warehouse or 'google_cloud_platform' for BigQuery."
    )


def _find_connection(conn_id: str) -> Connection | None:
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None
