"""Pipeline configuration: one documented place, cheap to read when the scheduler parses a DAG.

The configuration is a JSON object whose keys are the fields of :class:`PipelineConfig`. It is read
from the file named by the ``TEXTCLF_CONFIG`` environment variable, or the defaults apply when that
variable is unset. Reading it touches no database and no network and imports nothing heavy, so a DAG
file may call :func:`load_config` at parse time.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textclf.identifiers import (
    InvalidIdentifierError,
    TableRef,
    validate_column,
    validate_dataset,
    validate_project,
    validate_table,
)

CONFIG_ENV_VAR = "TEXTCLF_CONFIG"
HOME_ENV_VAR = "TEXTCLF_HOME"
DEFAULT_WAREHOUSE_CONN_ID = "textclf_warehouse"
NULL_TEXT_POLICIES = ("predict", "exclude")
TRAINING_BACKENDS = ("local", "vertex")


def textclf_home() -> Path:
    """Return the folder that contains the embedded warehouse and model store by default."""
    return Path(os.environ.get(HOME_ENV_VAR) or Path.cwd() / ".textclf").expanduser().resolve()


@dataclass(frozen=True)
class PipelineConfig:
    """Settings of the daily pipeline: where data lives, what to check, how to train.

    :param project: Google Cloud project of every table and model. The embedded backend ignores it.
    :param dataset: BigQuery dataset (DuckDB schema) of the result tables and models.
    :param source_dataset: dataset of the source table; defaults to ``dataset``.
    :param source_table: day-partitioned table of texts to classify.
    :param source_date_column: DATE column of the source table that partitions it by day.
    :param id_columns: columns that identify a source row; copied to every prediction.
    :param text_column: STRING column with the text to classify.
    :param label_column: column that ``sql/labels.sql`` turns into the true label, or None when the source
        has no labels. Training needs it; the report measures accuracy only where it is set.
    :param predictions_table: day-partitioned result table written by the predict step.
    :param report_table: day-partitioned table with one summary row per day.
    :param durations_table: day-partitioned table with the duration of each task per run.
    :param result_date_column: DATE column that partitions the three result tables.
    :param model_prefix: prefix of the per-day BigQuery ML model names, e.g. ``textclf_model_20141201``.
    :param store_uri: model store root: a local folder or a ``gs://bucket/prefix`` URI.
    :param warehouse_conn_id: Airflow connection that picks the backend (``duckdb`` or ``google_cloud_platform``).
    :param impersonation_chain: service account (or chain of them) that BigQuery jobs impersonate.
    :param location: BigQuery location of the datasets; the bucket must be in the same location.
    :param timezone: IANA timezone in which a day starts and ends.
    :param start_date: first day the schedule covers, ``YYYY-MM-DD``.
    :param min_rows: fewest source rows a day may have before the check fails.
    :param max_blank_text_share: largest share of NULL or blank texts a day may have.
    :param min_training_examples: fewest labelled examples before the run's day needed to train.
    :param skip_empty_days: on a day with no source rows, skip the rest of the run (True) or fail (False).
    :param null_text_policy: ``predict`` scores NULL text as an empty string; ``exclude`` leaves those rows
        out of the predictions and counts them in the report.
    :param low_confidence_threshold: predictions whose probability is below this count as low confidence.
    :param task_retries: retries of the tasks that talk to the warehouse, with exponential backoff
        from one minute; the train task retries at most once.
    :param training_backend: ``local`` trains in a subprocess of the worker; ``vertex`` submits a Vertex AI
        custom job.
    :param max_epochs: most training epochs; early stopping usually ends sooner.
    :param vertex_region: region of the Vertex AI custom job.
    :param vertex_machine_type: machine type of the Vertex AI custom job.
    :param vertex_container_uri: prebuilt TensorFlow training container of the Vertex AI custom job.
    :param vertex_staging_bucket: ``gs://`` bucket for the Vertex AI job's staging files.
    """

    project: str = "textclf-local"
    dataset: str = "textclf"
    source_dataset: str | None = None
    source_table: str = "reviews"
    source_date_column: str = "review_date"
    id_columns: tuple[str, ...] = ("review_id",)
    text_column: str = "text"
    label_column: str | None = "rating"
    predictions_table: str = "predictions"
    report_table: str = "daily_report"
    durations_table: str = "task_durations"
    result_date_column: str = "run_date"
    model_prefix: str = "textclf_model"
    store_uri: str = ""
    warehouse_conn_id: str = DEFAULT_WAREHOUSE_CONN_ID
    gcp_conn_id: str = "google_cloud_default"
    impersonation_chain: tuple[str, ...] = ()
    location: str = "US"
    timezone: str = "Asia/Seoul"
    start_date: str = "2026-01-01"
    min_rows: int = 1
    max_blank_text_share: float = 0.05
    min_training_examples: int = 100
    skip_empty_days: bool = True
    null_text_policy: str = "predict"
    low_confidence_threshold: float = 0.6
    task_retries: int = 3
    training_backend: str = "local"
    max_epochs: int = 8
    vertex_region: str = "us-central1"
    vertex_machine_type: str = "n1-standard-8"
    vertex_container_uri: str = "us-docker.pkg.dev/vertex-ai/training/tf-cpu.2-17.py310:latest"
    vertex_staging_bucket: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_project(self.project, what="`project`")
        validate_dataset(self.dataset, what="`dataset`")
        if self.source_dataset is not None:
            validate_dataset(self.source_dataset, what="`source_dataset`")
        for name in ("source_table", "predictions_table", "report_table", "durations_table", "model_prefix"):
            validate_table(getattr(self, name), what=f"`{name}`")
        for name in ("source_date_column", "text_column", "result_date_column"):
            validate_column(getattr(self, name), what=f"`{name}`")
        if self.label_column is not None:
            validate_column(self.label_column, what="`label_column`")
        if not self.id_columns:
            raise InvalidIdentifierError("`id_columns` is empty: name at least one column that identifies a row.")
        for column in self.id_columns:
            validate_column(column, what="`id_columns` entry")
        if self.null_text_policy not in NULL_TEXT_POLICIES:
            raise ValueError(f"`null_text_policy` must be one of {NULL_TEXT_POLICIES}, got {self.null_text_policy!r}.")
        if self.training_backend not in TRAINING_BACKENDS:
            raise ValueError(f"`training_backend` must be one of {TRAINING_BACKENDS}, got {self.training_backend!r}.")
        if self.task_retries < 0:
            raise ValueError(f"`task_retries` must be 0 or more, got {self.task_retries!r}.")
        if not 0.0 <= self.max_blank_text_share <= 1.0:
            raise ValueError(f"`max_blank_text_share` must be between 0 and 1, got {self.max_blank_text_share!r}.")
        if not 0.0 <= self.low_confidence_threshold <= 1.0:
            raise ValueError(
                f"`low_confidence_threshold` must be between 0 and 1, got {self.low_confidence_threshold!r}."
            )

    @property
    def resolved_store_uri(self) -> str:
        """The model store root, defaulting to ``$TEXTCLF_HOME/store``."""
        return self.store_uri or str(textclf_home() / "store")

    def table(self, name: str) -> TableRef:
        """Return the fully qualified name of a result table or model in ``dataset``."""
        return TableRef(self.project, self.dataset, name)

    @property
    def source(self) -> TableRef:
        return TableRef(self.project, self.source_dataset or self.dataset, self.source_table)

    @property
    def predictions(self) -> TableRef:
        return self.table(self.predictions_table)

    @property
    def report(self) -> TableRef:
        return self.table(self.report_table)

    @property
    def durations(self) -> TableRef:
        return self.table(self.durations_table)

    def model(self, model_version: str) -> TableRef:
        """Return the BigQuery ML model name for a model version such as ``20141201``."""
        return self.table(f"{self.model_prefix}_{model_version}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PipelineConfig:
        """Build a configuration from a JSON object, rejecting unknown keys by name."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown configuration keys {unknown}; valid keys are {sorted(known)}.")
        values = dict(values)
        for key in ("id_columns", "impersonation_chain"):
            if isinstance(values.get(key), list):
                values[key] = tuple(values[key])
            elif isinstance(values.get(key), str) and key == "impersonation_chain":
                values[key] = (values[key],)
        return cls(**values)


def load_config(path: str | os.PathLike[str] | None = None) -> PipelineConfig:
    """Read the configuration from ``path``, else from ``$TEXTCLF_CONFIG``, else return the defaults."""
    path = path or os.environ.get(CONFIG_ENV_VAR)
    if not path:
        return PipelineConfig()
    try:
        values = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"Configuration file {path} not found: fix {CONFIG_ENV_VAR} or create the file.") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"Configuration file {path} is not valid JSON: {error}.") from None
    if not isinstance(values, dict):
        raise ValueError(f"Configuration file {path} must contain a JSON object of settings.")
    return PipelineConfig.from_dict(values)
