"""The names that SQL templates place, built from the configuration and the run's params.

Templates in ``sql/`` reach every table, model and column through the ``textclf`` object built
here, and every name in it has passed :mod:`textclf.identifiers`. Values never go through it: they
are query parameters (``@run_date``), because a value placed into SQL text could change the
statement, while a validated identifier cannot.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from textclf.config import PipelineConfig
from textclf.identifiers import InvalidIdentifierError, TableRef


@dataclass(frozen=True)
class SqlNames:
    """Back-quoted table and model names and plain column names for one run."""

    source: str
    predictions: str
    report: str
    durations: str
    model: str
    id_columns: tuple[str, ...]
    text_column: str
    label_column: str | None
    source_date_column: str
    result_date_column: str
    null_text_policy: str


def source_table(config: PipelineConfig, params: Mapping[str, Any] | None = None) -> TableRef:
    """Return the source table: the ``source_table`` param when a run sets it, else the configured one."""
    override = (params or {}).get("source_table")
    if not override:
        return config.source
    try:
        return TableRef.parse(str(override), default_project=config.project, default_dataset=config.dataset)
    except InvalidIdentifierError as error:
        raise InvalidIdentifierError(
            f"Invalid `source_table` param {override!r}: {error} Use 'dataset.table' or 'project.dataset.table'."
        ) from None


def model_name(config: PipelineConfig, run_day: dt.date) -> TableRef:
    """Return the BigQuery ML model that serves the run's day, e.g. ``textclf_model_20141201``."""
    return config.model(run_day.strftime("%Y%m%d"))


def build_sql_names(config: PipelineConfig, run_day: dt.date, params: Mapping[str, Any] | None = None) -> SqlNames:
    """Build the validated names that the SQL templates of one run place."""
    return SqlNames(
        source=source_table(config, params).sql,
        predictions=config.predictions.sql,
        report=config.report.sql,
        durations=config.durations.sql,
        model=model_name(config, run_day).sql,
        id_columns=tuple(config.id_columns),
        text_column=config.text_column,
        label_column=config.label_column,
        source_date_column=config.source_date_column,
        result_date_column=config.result_date_column,
        null_text_policy=config.null_text_policy,
    )
