"""The report step: the day's summary row, the task durations, and a rendered report in the store."""

from __future__ import annotations

import datetime as dt
import statistics
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from textclf.operators.base import WarehouseOperator
from textclf.store import get_model_store

if TYPE_CHECKING:
    from airflow.sdk import Context

    from textclf.warehouse import Warehouse

# Days of report rows and durations that the plots and the trailing medians look back over.
HISTORY_DAYS = 30
HISTOGRAM_BUCKETS = 20
# A task is flagged as slow when it took more than this many times its trailing median.
SLOW_TASK_FACTOR = 2.0


class ReportOperator(WarehouseOperator):
    """Write the day's report row, record the task durations and render the report into the store.

    The report row (rows predicted, share per class and its change against the trailing seven days,
    mean probability, low-confidence share, accuracy where the source has labels) replaces the day's
    partition of the report table. The durations that the upstream tasks returned, and this task's
    own, replace the day's partition of the durations table. A task that took more than twice its
    trailing median is flagged in the rendered report.

    :param config: the pipeline configuration.
    :param sql: the report row query (templated); defaults to ``report.sql``.
    :param day_sql: the query that reads the day's report row back (templated).
    :param history_sql: the class-share history query (templated).
    :param histogram_sql: the probability histogram query (templated).
    :param durations_sql: the trailing task durations query (templated).
    :param timed_task_ids: the upstream tasks whose ``duration_seconds`` are recorded.
    :param predict_task_id: the task whose XCom names the model version.
    """

    template_fields: Sequence[str] = ("sql", "day_sql", "history_sql", "histogram_sql", "durations_sql")
    template_fields_renderers = {field: "sql" for field in template_fields}
    ui_color = "#fbf7dc"

    def __init__(
        self,
        *,
        sql: str = "report.sql",
        day_sql: str = "report_day.sql",
        history_sql: str = "report_history.sql",
        histogram_sql: str = "probability_histogram.sql",
        durations_sql: str = "task_durations.sql",
        timed_task_ids: Sequence[str] = ("check_source_data", "train_model", "import_model", "predict"),
        predict_task_id: str = "predict",
        **kwargs: Any,
    ) -> None:
        super().__init__(sql=sql, **kwargs)
        self.day_sql = day_sql
        self.history_sql = history_sql
        self.histogram_sql = histogram_sql
        self.durations_sql = durations_sql
        self.timed_task_ids = list(timed_task_ids)
        self.predict_task_id = predict_task_id

    def execute_step(self, context: Context, run_day: dt.date) -> dict[str, Any]:
        started = time.monotonic()
        config = self.config
        ti = context["ti"]
        predicted = ti.xcom_pull(task_ids=self.predict_task_id) or {}
        model_version = predicted.get("model_version")

        with self.get_warehouse(context) as warehouse:
            warehouse.write_partition(
                self.sql,
                {
                    "run_date": run_day,
                    "model_version": model_version,
                    "low_confidence_threshold": config.low_confidence_threshold,
                },
                table=config.report,
                partition_column=config.result_date_column,
                partition_date=run_day,
            )
            summary = warehouse.query(self.day_sql, {"run_date": run_day}).to_pylist()[0]
            history = warehouse.query(self.history_sql, {"run_date": run_day, "history_days": HISTORY_DAYS}).to_pylist()
            histogram = warehouse.query(
                self.histogram_sql, {"run_date": run_day, "bucket_count": HISTOGRAM_BUCKETS}
            ).to_pylist()

            durations = self._collect_durations(ti, started)
            trailing = self._trailing_durations(warehouse, run_day)
            self._record_durations(warehouse, context, run_day, durations)

        slow_tasks = flag_slow_tasks(durations, trailing)
        for task in slow_tasks:
            self.log.warning(
                "Task %s took %.1f s on %s, more than %.0f times its trailing median of %.1f s",
                task["task_id"],
                task["duration_seconds"],
                run_day,
                SLOW_TASK_FACTOR,
                task["median_seconds"],
            )

        from textclf.report import render_report

        files = render_report(
            run_day=run_day,
            summary=summary,
            history=history,
            histogram=histogram,
            histogram_buckets=HISTOGRAM_BUCKETS,
            durations=durations,
            trailing_durations=trailing,
            slow_tasks=slow_tasks,
            low_confidence_threshold=config.low_confidence_threshold,
        )
        store = get_model_store(config.resolved_store_uri, gcp_conn_id=config.gcp_conn_id)
        report_uri = store.write_report(run_day.isoformat(), files)
        self.log.info(
            "Report for %s: %s rows predicted, accuracy %s; written to %s",
            run_day,
            summary.get("rows_predicted"),
            summary.get("accuracy"),
            report_uri,
        )
        return {
            "report_uri": report_uri,
            "rows_predicted": summary.get("rows_predicted"),
            "slow_tasks": [task["task_id"] for task in slow_tasks],
        }

    def _collect_durations(self, ti: Any, started: float) -> dict[str, float]:
        durations: dict[str, float] = {}
        for task_id in self.timed_task_ids:
            result = ti.xcom_pull(task_ids=task_id) or {}
            if result.get("duration_seconds") is not None:
                durations[task_id] = float(result["duration_seconds"])
        # This task's own time up to here: the rendering that follows takes well under a second.
        durations[self.task_id] = round(time.monotonic() - started, 3)
        return durations

    def _trailing_durations(self, warehouse: Warehouse, run_day: dt.date) -> list[dict[str, Any]]:
        if not warehouse.table_exists(self.config.durations):
            return []
        return warehouse.query(self.durations_sql, {"run_date": run_day, "history_days": HISTORY_DAYS}).to_pylist()

    def _record_durations(
        self, warehouse: Warehouse, context: Context, run_day: dt.date, durations: dict[str, float]
    ) -> None:
        import pyarrow as pa

        dag_run = context.get("dag_run")
        run_id = getattr(dag_run, "run_id", None) or ""
        recorded_at = dt.datetime.now(dt.timezone.utc)
        rows = pa.table(
            {
                self.config.result_date_column: pa.array([run_day] * len(durations), pa.date32()),
                "task_id": pa.array(list(durations), pa.string()),
                "duration_seconds": pa.array(list(durations.values()), pa.float64()),
                "dag_run_id": pa.array([run_id] * len(durations), pa.string()),
                "recorded_at": pa.array([recorded_at] * len(durations), pa.timestamp("us", tz="UTC")),
            }
        )
        warehouse.load_partitions(rows, table=self.config.durations, partition_column=self.config.result_date_column)


def flag_slow_tasks(durations: dict[str, float], trailing: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the tasks whose duration exceeds ``SLOW_TASK_FACTOR`` times their trailing median.

    :param durations: this run's duration per task id, in seconds.
    :param trailing: rows of earlier days with ``task_id`` and ``duration_seconds``.
    """
    history: dict[str, list[float]] = {}
    for row in trailing:
        history.setdefault(row["task_id"], []).append(float(row["duration_seconds"]))
    slow = []
    for task_id, seconds in durations.items():
        if task_id not in history:
            continue
        median = statistics.median(history[task_id])
        if seconds > SLOW_TASK_FACTOR * median:
            slow.append({"task_id": task_id, "duration_seconds": seconds, "median_seconds": median})
    return slow
