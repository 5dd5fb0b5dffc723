"""The import step: check the stored SavedModel, then create the run day's BigQuery ML model."""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

from textclf.operators.base import WarehouseOperator
from textclf.sql_names import model_name
from textclf.store import SAVED_MODEL_DIR, get_model_store

if TYPE_CHECKING:
    from airflow.sdk import Context

# The column that sql/predict.sql passes to ML.PREDICT, which BigQuery ML matches to the model's input by name.
MODEL_INPUT_COLUMN = "text"


class ImportModelOperator(WarehouseOperator):
    """Run the preflight checks on a stored model version and import it for the run's day.

    The model is created as ``<model_prefix>_<YYYYMMDD>`` of the run's day with
    ``CREATE OR REPLACE MODEL``, so each day's predictions name the model that made them, and a
    rerun replaces only that day's model.

    :param config: the pipeline configuration.
    :param train_task_id: the task whose XCom names the model version to import.
    """

    ui_color = "#eef7e8"

    def __init__(self, *, train_task_id: str = "train_model", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.train_task_id = train_task_id

    def execute_step(self, context: Context, run_day: dt.date) -> dict[str, Any]:
        from textclf.preflight import check_saved_model

        trained = context["ti"].xcom_pull(task_ids=self.train_task_id) or {}
        version = trained.get("model_version")
        if not version:
            raise AirflowFailException(
                f"Task {self.train_task_id!r} returned no model_version for {run_day}; rerun it first."
            )
        store = get_model_store(self.config.resolved_store_uri, gcp_conn_id=self.config.gcp_conn_id)
        if not store.is_complete(version):
            raise AirflowFailException(
                f"Model version {version} is not complete in {store.root}: its upload did not finish. "
                f"Rerun task {self.train_task_id!r} for {run_day}."
            )

        with tempfile.TemporaryDirectory(prefix="textclf-import-") as workdir:
            local_version = store.fetch(version, Path(workdir))
            result = check_saved_model(local_version / SAVED_MODEL_DIR, input_name=MODEL_INPUT_COLUMN)
        if not result.ok:
            raise AirflowFailException(
                f"Model version {version} at {store.version_uri(version)} cannot be imported into BigQuery ML "
                f"as {model_name(self.config, run_day)}. The predict step sends the text as one STRING column "
                f"named {MODEL_INPUT_COLUMN!r}, so the model's serving signature needs exactly that input.\n- "
                + "\n- ".join(result.problems)
            )
        self.log.info("Model version %s passed the preflight checks (%d bytes)", version, result.total_bytes)

        model = model_name(self.config, run_day)
        model_path = store.model_path(version)
        with self.get_warehouse(context) as warehouse:
            warehouse.create_model(model, model_path)
        self.log.info("Created model %s from %s", model, model_path)
        return {"model": str(model), "model_version": version, "model_path": model_path}
