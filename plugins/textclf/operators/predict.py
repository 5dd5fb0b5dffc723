"""The predict step: ML.PREDICT over the run's day, written into that day's partition."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

from textclf.operators.base import WarehouseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


class PredictOperator(WarehouseOperator):
    """Predict every source row of the run's day and replace that day's partition of the predictions table.

    :param config: the pipeline configuration.
    :param sql: the prediction query (templated); defaults to ``predict.sql``.
    :param import_task_id: the task whose XCom names the imported model version.
    """

    ui_color = "#f3ecfa"

    def __init__(self, *, sql: str = "predict.sql", import_task_id: str = "import_model", **kwargs: Any) -> None:
        super().__init__(sql=sql, **kwargs)
        self.import_task_id = import_task_id

    def execute_step(self, context: Context, run_day: dt.date) -> dict[str, Any]:
        imported = context["ti"].xcom_pull(task_ids=self.import_task_id) or {}
        version = imported.get("model_version")
        if not version:
            raise AirflowFailException(
                f"Task {self.import_task_id!r} returned no model_version for {run_day}; rerun it first."
            )
        table = self.config.predictions
        with self.get_warehouse(context) as warehouse:
            rows = warehouse.write_partition(
                self.sql,
                {"run_date": run_day, "model_version": version},
                table=table,
                partition_column=self.config.result_date_column,
                partition_date=run_day,
            )
        self.log.info("Wrote %d predictions to %s for %s with model version %s", rows, table, run_day, version)
        return {"predictions_table": str(table), "rows_predicted": rows, "model_version": version}
