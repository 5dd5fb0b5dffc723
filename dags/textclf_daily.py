"""The daily textclf pipeline: check the day's data, train, import the model, predict, report.

The run for day D has the data interval [D 00:00, D+1 00:00) in the configured timezone (default
Asia/Seoul), so a scheduled run starts once D has ended and processes D, and a backfill for D
processes D. A run can also name its day with the ``run_date`` param (see textclf.run_day).

Settings come from the JSON file named by ``TEXTCLF_CONFIG`` (see textclf.config). Parsing this
file reads that small local file and nothing else: TensorFlow, DuckDB, pandas and the BigQuery
client load only inside the tasks.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

from airflow.sdk import DAG, CronDataIntervalTimetable, Param

from textclf.config import load_config
from textclf.operators import (
    ImportModelOperator,
    PredictOperator,
    ReportOperator,
    SourceDataCheckOperator,
    TrainModelOperator,
)

CONFIG = load_config()
DAG_FOLDER = Path(__file__).resolve().parent
# Templates live in sql/ beside the DAG file on Cloud Composer and one level up in this repository.
SQL_SEARCH_PATH = [str(DAG_FOLDER / "sql"), str(DAG_FOLDER.parent / "sql")]

# Retries with exponential backoff for the tasks that talk to the warehouse.
WAREHOUSE_RETRIES = {
    "retries": CONFIG.task_retries,
    "retry_delay": dt.timedelta(minutes=1),
    "retry_exponential_backoff": True,
    "max_retry_delay": dt.timedelta(minutes=15),
}

with DAG(
    dag_id="textclf_daily",
    description="Classify each day's texts with a Keras model imported into BigQuery ML.",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone=CONFIG.timezone),
    start_date=dt.datetime.combine(dt.date.fromisoformat(CONFIG.start_date), dt.time(), ZoneInfo(CONFIG.timezone)),
    catchup=False,
    # One run at a time, backfills included, so two runs never replace the same model or partition
    # at once. A backfill of many days therefore runs one day after the other.
    max_active_runs=1,
    template_searchpath=SQL_SEARCH_PATH,
    default_args={"owner": "textclf", "depends_on_past": False},
    params={
        "run_date": Param(
            None,
            type=["null", "string"],
            format="date",
            description="Day to process, YYYY-MM-DD. Empty: the run's data interval decides.",
        ),
        "retrain": Param(
            True,
            type="boolean",
            description="Train a new model. Off: reuse the newest stored model up to the run's day.",
        ),
        "source_table": Param(
            None,
            type=["null", "string"],
            pattern=r"^([a-z][a-z0-9-]{4,28}[a-z0-9]\.)?[A-Za-z0-9_]+\.[A-Za-z_][A-Za-z0-9_]*$",
            description="Read another source table, as dataset.table or project.dataset.table.",
        ),
    },
    tags=["textclf", "bigquery-ml"],
    doc_md=__doc__,
) as dag:
    check_source_data = SourceDataCheckOperator(task_id="check_source_data", config=CONFIG, **WAREHOUSE_RETRIES)
    # Training failures are rarely transient, and a retry costs a full training run.
    train_model = TrainModelOperator(task_id="train_model", config=CONFIG, retries=min(CONFIG.task_retries, 1))
    import_model = ImportModelOperator(task_id="import_model", config=CONFIG, **WAREHOUSE_RETRIES)
    predict = PredictOperator(task_id="predict", config=CONFIG, **WAREHOUSE_RETRIES)
    report = ReportOperator(task_id="report", config=CONFIG, **WAREHOUSE_RETRIES)

    check_source_data >> train_model >> import_model >> predict >> report
