"""The check step: is the day's source data there and fit to predict and train on?"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from textclf.operators.base import WarehouseOperator
from textclf.sql_names import source_table

if TYPE_CHECKING:
    from airflow.sdk import Context

    from textclf.config import PipelineConfig
    from textclf.identifiers import TableRef


class SourceDataCheckOperator(WarehouseOperator):
    """Check one day of the source table against the configured thresholds.

    Fails, listing each failed check with its observed and expected values, when the day has fewer
    rows than ``min_rows``, a larger share of NULL or blank texts than ``max_blank_text_share``, any
    duplicate ids, or (when the run retrains) fewer labelled examples before the day than
    ``min_training_examples``. A day with no rows skips the rest of the run, or fails when
    ``skip_empty_days`` is off.

    :param config: the pipeline configuration.
    :param sql: the check query (templated); defaults to ``check_source_day.sql``.
    """

    ui_color = "#e8f4fa"

    def __init__(self, *, sql: str = "check_source_day.sql", **kwargs: Any) -> None:
        super().__init__(sql=sql, **kwargs)

    def execute_step(self, context: Context, run_day: dt.date) -> dict[str, Any]:
        config = self.config
        source = source_table(config, context.get("params"))
        retrain = bool((context.get("params") or {}).get("retrain", True))

        with self.get_warehouse(context) as warehouse:
            columns = warehouse.table_columns(source)
            if columns is None:
                raise AirflowFailException(
                    f"Source table {source} not found. Load data into it first, e.g. "
                    f"`python -m textclf load FILE --table {source} --partition-column {config.source_date_column}`, "
                    f"or set `source_table` in the configuration."
                )
            check_source_columns(config, source, columns)
            figures = warehouse.query(self.sql, {"run_date": run_day}).to_pylist()[0]
        self.log.info("Checked %s for %s: %s", source, run_day, figures)

        row_count = int(figures["row_count"])
        if row_count == 0:
            message = f"No rows in {source} for {config.source_date_column} = {run_day}: the day's partition is missing."
            if config.skip_empty_days:
                raise AirflowSkipException(f"{message} Skipping the rest of the run (skip_empty_days is on).")
            raise AirflowFailException(f"{message} Load the day's data, or turn on skip_empty_days to skip such days.")

        failures = []
        if row_count < config.min_rows:
            failures.append(f"row count {row_count} is below min_rows {config.min_rows}")
        blank_share = int(figures["blank_text_count"]) / row_count
        if blank_share > config.max_blank_text_share:
            failures.append(
                f"share of NULL or blank `{config.text_column}` is {blank_share:.4f} "
                f"({figures['blank_text_count']} of {row_count} rows), above max_blank_text_share "
                f"{config.max_blank_text_share}"
            )
        if int(figures["duplicate_id_count"]) > 0:
            failures.append(
                f"{figures['duplicate_id_count']} ids of ({', '.join(config.id_columns)}) occur more than once, "
                f"in {figures['duplicate_row_count']} rows; expected every id once per day"
            )
        training_examples = figures.get("training_example_count")
        if retrain and training_examples is not None and int(training_examples) < config.min_training_examples:
            failures.append(
                f"{training_examples} labelled examples before {run_day}, below min_training_examples "
                f"{config.min_training_examples}"
            )
        if failures:
            raise AirflowFailException(
                f"Data checks failed for {source} on {run_day}: " + "; ".join(failures) + "."
            )

        return {
            "source_table": str(source),
            "row_count": row_count,
            "blank_text_count": int(figures["blank_text_count"]),
            "training_example_count": None if training_examples is None else int(training_examples),
        }


def check_source_columns(config: PipelineConfig, source: TableRef, columns: dict[str, str]) -> None:
    """Raise ``AirflowFailException`` unless the source table has every configured column, with its type.

    The check query and the predict query would otherwise fail on the first missing column with the
    database's own error, or predict on text that is not a string.

    :param config: the pipeline configuration that names the columns.
    :param source: the source table, for messages.
    :param columns: the source table's columns and their BigQuery types.
    """
    expected: dict[str, str | None] = {column: None for column in config.id_columns}
    if config.label_column is not None:
        expected[config.label_column] = None
    expected[config.text_column] = "STRING"
    expected[config.source_date_column] = "DATE"

    problems = []
    for column, type_name in expected.items():
        if column not in columns:
            problems.append(f"column {column!r} ({type_name or 'any type'}) is missing")
        elif type_name is not None and columns[column] != type_name:
            problems.append(f"column {column!r} has type {columns[column]}, expected {type_name}")
    if problems:
        raise AirflowFailException(
            f"Source table {source} does not match the configuration: {'; '.join(problems)}. Columns found: "
            f"{', '.join(columns)}. Fix the column names in the configuration (id_columns, text_column, "
            f"label_column, source_date_column), or reload the table with those columns and types."
        )
