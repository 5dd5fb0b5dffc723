"""The predict step: ML.PREDICT over the run's day, written into that day's partition."""

from __future__ import annotations

import datetime as dt
import time
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

from textclf.operators.base import WarehouseOperator
from textclf.warehouse.base import WarehouseError

if TYPE_CHECKING:
    from airflow.sdk import Context

    from textclf.warehouse.bigquery import BigQueryWarehouse

# The poll interval of BigQueryInsertJobTrigger in apache-airflow-providers-google 22.8.0.
DEFAULT_POLL_INTERVAL_SECONDS = 4.0


class PredictOperator(WarehouseOperator):
    """Predict every source row of the run's day and replace that day's partition of the predictions table.

    On BigQuery the step runs one query job that writes ``predictions$YYYYMMDD`` with
    WRITE_TRUNCATE, so a rerun of the day replaces the partition whole. With ``deferrable`` on, the
    task submits that job and frees its worker slot while ``BigQueryInsertJobTrigger`` waits for
    the job in the triggerer. ``execute_complete`` then reads the rows written and returns the same
    XCom as the synchronous path. Its ``duration_seconds`` spans from the first ``execute`` to
    ``execute_complete``, the time in the triggerer included. The embedded warehouse runs the
    prediction in the task itself and ignores ``deferrable``.

    When the task is killed while it waits on the job, ``on_kill`` cancels the job. While the task
    is deferred, the trigger cancels the job instead: its ``cancel_on_kill`` is on, and with
    apache-airflow-providers-google 22.8.0 on Airflow 3.3 the trigger's own ``on_kill`` does it.

    :param config: the pipeline configuration.
    :param sql: the prediction query (templated); defaults to ``predict.sql``.
    :param import_task_id: the task whose XCom names the imported model version.
    :param deferrable: wait for the BigQuery job in the triggerer instead of the worker. When not
        given, the ``deferrable`` key of the configuration's ``extra`` object decides, default off.
    :param poll_interval: seconds between the trigger's checks of the job's state.
    """

    ui_color = "#f3ecfa"

    def __init__(
        self,
        *,
        sql: str = "predict.sql",
        import_task_id: str = "import_model",
        deferrable: bool | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL_SECONDS,
        **kwargs: Any,
    ) -> None:
        super().__init__(sql=sql, **kwargs)
        if deferrable is None:
            deferrable = self.config.extra.get("deferrable", False)
        if not isinstance(deferrable, bool):
            raise ValueError(
                f"`deferrable` must be true or false, got {deferrable!r}. Fix the argument of task "
                f"{self.task_id!r} or the `deferrable` key of the configuration's `extra` object."
            )
        if not poll_interval > 0:
            raise ValueError(f"`poll_interval` must be a positive number of seconds, got {poll_interval!r}.")
        self.import_task_id = import_task_id
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self._started_at: float | None = None
        self._warehouse: BigQueryWarehouse | None = None
        self._job_id: str | None = None

    def execute(self, context: Context) -> dict[str, Any]:
        # Wall-clock time, unlike the base class's monotonic clock, still means something in
        # execute_complete, which may run in another process on another worker.
        self._started_at = time.time()
        return super().execute(context)

    def execute_step(self, context: Context, run_day: dt.date) -> dict[str, Any]:
        from textclf.warehouse.bigquery import BigQueryWarehouse

        version = self._imported_version(context, run_day)
        table = self.config.predictions
        parameters = {"run_date": run_day, "model_version": version}
        partition = {"table": table, "partition_column": self.config.result_date_column, "partition_date": run_day}

        with self.get_warehouse(context) as warehouse:
            if not isinstance(warehouse, BigQueryWarehouse):
                if self.deferrable:
                    self.log.info("Ignoring deferrable: the embedded warehouse predicts inside the task")
                rows = warehouse.write_partition(self.sql, parameters, **partition)
            else:
                # The job id is kept until the job ends, so on_kill can cancel the job.
                self._warehouse = warehouse
                try:
                    self._job_id = warehouse.submit_partition_write(self.sql, parameters, **partition)
                    if self.deferrable:
                        self._defer_on_job(warehouse, self._job_id, run_day, version)
                    rows = warehouse.finish_partition_write(self._job_id)
                finally:
                    self._job_id = None
                    self._warehouse = None

        self.log.info("Wrote %d predictions to %s for %s with model version %s", rows, table, run_day, version)
        return {"predictions_table": str(table), "rows_predicted": rows, "model_version": version}

    def _imported_version(self, context: Context, run_day: dt.date) -> str:
        imported = context["ti"].xcom_pull(task_ids=self.import_task_id) or {}
        version = imported.get("model_version")
        if not version:
            raise AirflowFailException(
                f"Task {self.import_task_id!r} returned no model_version for {run_day}; rerun it first."
            )
        return version

    def _defer_on_job(self, warehouse: BigQueryWarehouse, job_id: str, run_day: dt.date, version: str) -> None:
        from airflow.providers.google.cloud.triggers.bigquery import BigQueryInsertJobTrigger

        self.log.info("Deferring until BigQuery job %s ends, checking every %s s", job_id, self.poll_interval)
        self.defer(
            trigger=BigQueryInsertJobTrigger(
                conn_id=warehouse.gcp_conn_id,
                job_id=job_id,
                project_id=warehouse.job_project,
                location=warehouse.location,
                poll_interval=self.poll_interval,
                impersonation_chain=warehouse.impersonation_chain,
            ),
            method_name="execute_complete",
            kwargs={
                "job_id": job_id,
                "run_day": run_day.isoformat(),
                "model_version": version,
                "started_at": self._started_at,
            },
        )

    def execute_complete(
        self,
        context: Context,
        event: dict[str, Any],
        *,
        job_id: str,
        run_day: str,
        model_version: str,
        started_at: float,
    ) -> dict[str, Any]:
        """Finish a deferred prediction: fail on an error event, else count the rows the job wrote.

        :param context: the task's context.
        :param event: the ``BigQueryInsertJobTrigger`` event, with ``status`` and ``message``.
        :param job_id: the partition-write job that the task deferred on.
        :param run_day: the run's day, ``YYYY-MM-DD``.
        :param model_version: the model version that predicted.
        :param started_at: the wall-clock time of the first ``execute``, in seconds since the epoch.
        """
        from textclf.warehouse.bigquery import BigQueryWarehouse

        table = self.config.predictions
        if event.get("status") != "success":
            raise WarehouseError(
                f"BigQuery job {job_id} (partition write of {table} for {run_day}) failed: {event.get('message')}. "
                f"Open the job in the BigQuery console (project {self.config.project}, location "
                f"{self.config.location}) for the failing statement, fix it and rerun the task."
            )

        with self.get_warehouse(context) as warehouse:
            if not isinstance(warehouse, BigQueryWarehouse):
                raise WarehouseError(
                    f"Cannot read the result of BigQuery job {job_id}: connection "
                    f"{self.config.warehouse_conn_id!r} no longer selects BigQuery. Restore the connection "
                    f"or clear the task to predict {run_day} again."
                )
            rows = warehouse.finish_partition_write(job_id)
        self.log.info(
            "Wrote %d predictions to %s for %s with model version %s", rows, table, run_day, model_version
        )
        # The two times may come from the clocks of two workers, so a small skew is clipped at zero.
        duration = round(max(time.time() - started_at, 0.0), 3)
        return {
            "predictions_table": str(table),
            "rows_predicted": rows,
            "model_version": model_version,
            "run_day": run_day,
            "duration_seconds": duration,
        }

    def on_kill(self) -> None:
        warehouse, job_id = self._warehouse, self._job_id
        if warehouse is None or job_id is None:
            self.log.info("No running BigQuery job to cancel")
            return
        self.log.info("Task killed: cancelling BigQuery job %s", job_id)
        warehouse.cancel(job_id)
