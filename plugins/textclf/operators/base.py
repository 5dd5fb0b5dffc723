"""The base of textclf's operators: the run's day, the SQL names, the warehouse and the timing."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from textclf.run_day import resolve_run_day
from textclf.sql_names import build_sql_names

if TYPE_CHECKING:
    import jinja2
    from airflow.sdk import Context

    from textclf.config import PipelineConfig
    from textclf.warehouse import Warehouse


class WarehouseOperator(BaseOperator):
    """An operator that runs one step of the daily pipeline against the configured warehouse.

    Its ``sql`` is the name of a template in ``sql/`` (found through the DAG's template search path)
    or SQL text. Templates reach tables and columns through ``textclf`` (see
    :mod:`textclf.sql_names`) and values through query parameters. ``execute`` returns a small
    dict for XCom, with the step's ``duration_seconds`` added, which the report records.

    :param config: the pipeline configuration.
    :param sql: the SQL template of the step, e.g. ``predict.sql`` (templated).
    """

    template_fields: Sequence[str] = ("sql",)
    # Only `sql` is templated, so no other argument that ends in ".sql" or ".json" (a gs:// URI,
    # for example) is ever read as a template file.
    template_ext: Sequence[str] = (".sql",)
    template_fields_renderers = {"sql": "sql"}

    def __init__(self, *, config: PipelineConfig, sql: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.sql = sql

    def render_template_fields(self, context: Context, jinja_env: jinja2.Environment | None = None) -> None:
        # Templates see the validated names as `textclf`; see textclf.sql_names.
        run_day = resolve_run_day(context, self.config.timezone)
        context["textclf"] = build_sql_names(self.config, run_day, context.get("params"))  # type: ignore[typeddict-unknown-key]
        super().render_template_fields(context, jinja_env)

    def execute(self, context: Context) -> dict[str, Any]:
        started = time.monotonic()
        run_day = resolve_run_day(context, self.config.timezone)
        self.log.info("Running %s for day %s", self.task_id, run_day)
        result = self.execute_step(context, run_day)
        result["run_day"] = run_day.isoformat()
        result["duration_seconds"] = round(time.monotonic() - started, 3)
        return result

    def execute_step(self, context: Context, run_day: dt.date) -> dict[str, Any]:
        """Run the step for ``run_day`` and return a small dict for XCom."""
        raise NotImplementedError

    def get_warehouse(self, context: Context) -> Warehouse:
        """Open the warehouse of the configured connection, labelling BigQuery jobs with the DAG and task."""
        from textclf.warehouse import get_warehouse

        return get_warehouse(
            self.config.warehouse_conn_id,
            project=self.config.project,
            location=self.config.location,
            labels={"dag_id": self.dag_id, "task_id": self.task_id},
            impersonation_chain=self.config.impersonation_chain,
        )
