"""The BigQuery warehouse: query jobs, day-partition writes and TensorFlow model imports."""

from __future__ import annotations

import datetime as dt
import io
import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from textclf.identifiers import TableRef, validate_column
from textclf.warehouse.base import QueryParameters, Warehouse, WarehouseError
from textclf.warehouse.bigquery_params import to_query_parameters

if TYPE_CHECKING:
    import pyarrow as pa
    from google.cloud import bigquery

log = logging.getLogger(__name__)

# BigQuery label rules: at most 64 labels; keys and values of at most 63 lowercase letters, digits,
# underscores and dashes; keys start with a letter. International letters are allowed by BigQuery
# but replaced here, so a label always matches what a filter in the console expects.
MAX_LABELS = 64
MAX_LABEL_LENGTH = 63
_LABEL_INVALID_CHARS = re.compile(r"[^a-z0-9_-]")

# A model path that may be written into CREATE MODEL as a string literal: a gs:// URI of a valid
# bucket name, path segments of letters, digits, dots, underscores and dashes, ending in "/*".
_MODEL_PATH_RE = re.compile(r"^gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](?:/[A-Za-z0-9._-]+)+/\*$")

# Staging tables of load_partitions expire on their own if the cleanup after the load never runs.
STAGING_TABLE_LIFETIME = dt.timedelta(days=1)
JOB_ID_PREFIX = "textclf_"


def sanitize_labels(labels: Mapping[str, object] | None) -> dict[str, str]:
    """Return ``labels`` rewritten to BigQuery's label rules.

    Keys and values are lowercased, every character outside ``[a-z0-9_-]`` becomes ``_`` and both are
    cut to 63 characters; a key that does not start with a letter gets the prefix ``l_``. Labels past
    the 64th are dropped.

    :param labels: label keys mapped to values, e.g. ``{"dag_id": "textclf_daily"}``.
    """
    sanitized: dict[str, str] = {}
    for key, value in (labels or {}).items():
        clean_key = _LABEL_INVALID_CHARS.sub("_", str(key).lower())
        if not clean_key[:1].isalpha():
            clean_key = "l_" + clean_key
        clean_value = _LABEL_INVALID_CHARS.sub("_", str(value).lower())
        sanitized[clean_key[:MAX_LABEL_LENGTH]] = clean_value[:MAX_LABEL_LENGTH]
    if len(sanitized) > MAX_LABELS:
        log.warning("Dropping %s job labels past BigQuery's limit of %s", len(sanitized) - MAX_LABELS, MAX_LABELS)
        sanitized = dict(list(sanitized.items())[:MAX_LABELS])
    return sanitized


def validate_model_path(model_path: str) -> str:
    """Return ``model_path`` if it is a ``gs://bucket/path/*`` URI that is safe to quote, else raise.

    :param model_path: the SavedModel location, e.g. ``gs://bucket/store/models/20141201/saved_model/*``.
    """
    if not isinstance(model_path, str) or not _MODEL_PATH_RE.fullmatch(model_path):
        raise WarehouseError(
            f"Invalid model path {model_path!r}: expected gs://BUCKET/PATH/* with a valid bucket name and "
            f"only letters, digits, '.', '_', '-' and '/' in the path. Use the model store's model_path()."
        )
    return model_path


class BigQueryWarehouse(Warehouse):
    """The warehouse on BigQuery; values travel as typed query parameters, results as Arrow.

    Clients are built on first use from the Airflow connection, so constructing the warehouse
    touches no network.

    :param gcp_conn_id: Airflow connection of type ``google_cloud_platform``.
    :param project: project that runs the jobs; defaults to the connection's project.
    :param location: BigQuery location of the jobs, e.g. ``US`` or ``asia-northeast3``.
    :param labels: labels put on every job, e.g. the DAG and task ids; sanitized to BigQuery's rules.
    :param impersonation_chain: service account to impersonate, or a chain of them.
    :param client: a ready ``google.cloud.bigquery.Client``; built from the connection when None.
    :param read_client: a ready ``BigQueryReadClient`` for the Storage Read API; built when None.
    """

    def __init__(
        self,
        *,
        gcp_conn_id: str = "google_cloud_default",
        project: str | None = None,
        location: str | None = None,
        labels: Mapping[str, str] | None = None,
        impersonation_chain: str | Sequence[str] | None = None,
        client: Any = None,
        read_client: Any = None,
    ) -> None:
        self.gcp_conn_id = gcp_conn_id
        self.project = project
        self.location = location
        self.labels = sanitize_labels(labels)
        self.impersonation_chain = impersonation_chain
        self._client = client
        self._read_client = read_client
        self._hook: Any = None

    # Clients

    def _get_hook(self) -> Any:
        if self._hook is None:
            from airflow.providers.google.cloud.hooks.bigquery import BigQueryHook

            self._hook = BigQueryHook(
                gcp_conn_id=self.gcp_conn_id,
                location=self.location,
                impersonation_chain=self.impersonation_chain,
                use_legacy_sql=False,
            )
        return self._hook

    @property
    def client(self) -> bigquery.Client:
        """The BigQuery client, built from the Airflow connection on first use."""
        if self._client is None:
            hook = self._get_hook()
            self._client = hook.get_client(project_id=self.project or hook.project_id, location=self.location)
            log.info("Connected to BigQuery project %s, location %s", self._client.project, self.location)
        return self._client

    @property
    def read_client(self) -> Any:
        """The BigQuery Storage Read API client, sharing the connection's credentials."""
        if self._read_client is None:
            from google.cloud import bigquery_storage

            self._read_client = bigquery_storage.BigQueryReadClient(credentials=self._get_hook().get_credentials())
        return self._read_client

    @property
    def job_project(self) -> str:
        """The project that runs and bills the jobs."""
        return self.project or self.client.project

    def close(self) -> None:
        if self._client is not None and hasattr(self._client, "close"):
            self._client.close()

    # Queries

    def query(self, sql: str, parameters: QueryParameters | None = None) -> pa.Table:
        from google.cloud import bigquery

        job_config = bigquery.QueryJobConfig(
            query_parameters=to_query_parameters(parameters), labels=self.labels, use_legacy_sql=False
        )
        job = self._start_query(sql, job_config)
        rows = self._wait(job, what="query")

        # The Storage Read API streams the result as Arrow record batches in parallel. The client
        # falls back to the REST pages only when the first page already contains every row.
        table = rows.to_arrow(bqstorage_client=self.read_client)
        log.info("BigQuery job %s returned %s rows", job.job_id, table.num_rows)
        return table

    def execute(self, sql: str, parameters: QueryParameters | None = None) -> None:
        from google.cloud import bigquery

        job_config = bigquery.QueryJobConfig(
            query_parameters=to_query_parameters(parameters), labels=self.labels, use_legacy_sql=False
        )
        job = self._start_query(sql, job_config)
        self._wait(job, what="statement")

    def table_exists(self, table: TableRef) -> bool:
        from google.api_core.exceptions import NotFound

        try:
            self.client.get_table(str(table))
        except NotFound:
            return False
        return True

    def table_columns(self, table: TableRef) -> dict[str, str] | None:
        """Return the columns of ``table`` from its schema (no query job), or None if it does not exist."""
        from google.api_core.exceptions import NotFound

        try:
            schema = self.client.get_table(str(table)).schema
        except NotFound:
            return None
        return {field.name: _standard_type_name(field.field_type, field.mode) for field in schema}

    # Partition writes

    def write_partition(
        self,
        sql: str,
        parameters: QueryParameters | None,
        *,
        table: TableRef,
        partition_column: str,
        partition_date: dt.date,
    ) -> int:
        job_id = self.submit_partition_write(
            sql, parameters, table=table, partition_column=partition_column, partition_date=partition_date
        )
        return self.finish_partition_write(job_id)

    def submit_partition_write(
        self,
        sql: str,
        parameters: QueryParameters | None,
        *,
        table: TableRef,
        partition_column: str,
        partition_date: dt.date,
    ) -> str:
        """Start a query job that replaces one day partition and return its job id without waiting.

        An operator may defer on the id with ``BigQueryInsertJobTrigger`` and then call
        :meth:`finish_partition_write`. The job writes to ``table$YYYYMMDD`` with WRITE_TRUNCATE, so
        BigQuery swaps the partition in only when the job succeeds, and rejects the job if a row
        carries another date in ``partition_column``.

        :param sql: the BigQuery SELECT that produces the partition's rows.
        :param parameters: values for the query's ``@name`` parameters.
        :param table: the day-partitioned table, created on the first write.
        :param partition_column: the DATE column that partitions ``table``.
        :param partition_date: the day whose partition is replaced.
        """
        from google.cloud import bigquery

        validate_column(partition_column, what="partition column")
        destination = partition_decorator(table, partition_date)
        job_config = bigquery.QueryJobConfig(
            destination=destination,
            write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
            create_disposition=bigquery.CreateDisposition.CREATE_IF_NEEDED,
            time_partitioning=bigquery.TimePartitioning(type_=bigquery.TimePartitioningType.DAY, field=partition_column),
            query_parameters=to_query_parameters(parameters),
            labels=self.labels,
            use_legacy_sql=False,
        )
        job = self._start_query(sql, job_config)
        log.info("BigQuery job %s started: replacing partition %s", job.job_id, destination)
        return job.job_id

    def finish_partition_write(self, job_id: str) -> int:
        """Wait for a partition-write job and return the number of rows it wrote.

        :param job_id: the id that :meth:`submit_partition_write` returned.
        """
        job = self.client.get_job(job_id, project=self.job_project, location=self.location)
        # The job writes its whole result set into the partition, so the result's row count, read
        # from the job's statistics with max_results=0 (no rows are downloaded), is the rows written.
        rows = self._wait(job, what="partition write", max_results=0)
        destination = job.destination
        log.info("BigQuery job %s wrote %s rows to %s", job_id, rows.total_rows, destination)
        return int(rows.total_rows or 0)

    def cancel(self, job_id: str) -> None:
        """Request cancellation of a running job, e.g. from an operator's ``on_kill``.

        :param job_id: the BigQuery job id.
        """
        log.info("Cancelling BigQuery job %s in %s", job_id, self.location)
        self.client.cancel_job(job_id, project=self.job_project, location=self.location)

    def load_partitions(self, data: pa.Table, *, table: TableRef, partition_column: str) -> dict[dt.date, int]:
        """Load rows into a day-partitioned table, replacing each day present in ``data``.

        The rows go to a staging table by a Parquet load job, then one multi-statement transaction
        deletes the target's rows of those days and inserts the staged rows. One transaction, unlike
        one ``$YYYYMMDD`` load job per day, replaces every day or none when a step fails midway.
        The staging table is dropped afterwards and expires after a day if that cleanup never runs.
        """
        from google.cloud import bigquery

        rows_per_day = _count_rows_per_day(data, partition_column=partition_column, table=table)
        if not rows_per_day:
            log.info("No rows to load into %s", table)
            return {}

        staging = table.with_table(f"_textclf_staging_{table.table[:900]}_{uuid.uuid4().hex}")
        try:
            self._load_parquet(data, staging)
            staged = self.client.get_table(str(staging))
            staged.expires = dt.datetime.now(dt.timezone.utc) + STAGING_TABLE_LIFETIME
            self.client.update_table(staged, ["expires"])

            # CREATE TABLE cannot run inside a transaction, so the empty target is created first;
            # creating it is harmless if the transaction then fails.
            script = (
                f"CREATE TABLE IF NOT EXISTS {table.sql}\n"
                f"PARTITION BY {partition_column}\n"
                f"AS SELECT * FROM {staging.sql} WHERE FALSE;\n"
                f"BEGIN TRANSACTION;\n"
                f"DELETE FROM {table.sql}\n"
                f"WHERE {partition_column} IN (SELECT DISTINCT {partition_column} FROM {staging.sql});\n"
                f"INSERT INTO {table.sql}\n"
                f"SELECT * FROM {staging.sql};\n"
                f"COMMIT TRANSACTION;"
            )
            job_config = bigquery.QueryJobConfig(labels=self.labels, use_legacy_sql=False)
            job = self._start_query(script, job_config)
            self._wait(job, what=f"replacement of {len(rows_per_day)} partitions of {table}")
        finally:
            self.client.delete_table(str(staging), not_found_ok=True)

        log.info("Loaded %s rows into %s across %s days", data.num_rows, table, len(rows_per_day))
        return rows_per_day

    def _load_parquet(self, data: pa.Table, destination: TableRef) -> None:
        import pyarrow.parquet as pq
        from google.cloud import bigquery

        buffer = io.BytesIO()
        pq.write_table(data, buffer)
        buffer.seek(0)
        job_config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET,
            write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
            create_disposition=bigquery.CreateDisposition.CREATE_IF_NEEDED,
            labels=self.labels,
        )
        log.info("Loading %s rows (%s bytes of Parquet) into %s", data.num_rows, buffer.getbuffer().nbytes, destination)
        job = self.client.load_table_from_file(
            buffer,
            str(destination),
            job_config=job_config,
            location=self.location,
            project=self.job_project,
            job_id_prefix=JOB_ID_PREFIX,
        )
        self._wait(job, what=f"load into {destination}")

    # Models

    def create_model(self, model: TableRef, model_path: str, *, replace: bool = True) -> None:
        from google.api_core.exceptions import GoogleAPICallError
        from google.cloud import bigquery

        # BigQuery binds query parameters only where an expression may stand, and OPTIONS of a DDL
        # statement take literals, so the path cannot travel as a parameter. It is quoted as a
        # literal only after validate_model_path has rejected every quote, backslash and newline.
        validate_model_path(model_path)
        verb = "CREATE OR REPLACE MODEL" if replace else "CREATE MODEL"
        ddl = f"{verb} {model.sql}\nOPTIONS (model_type = 'TENSORFLOW', model_path = '{model_path}')"

        job_config = bigquery.QueryJobConfig(labels=self.labels, use_legacy_sql=False)
        log.info("Importing TensorFlow model %s from %s", model, model_path)
        job = self.client.query(
            ddl, job_config=job_config, location=self.location, project=self.job_project, job_id_prefix=JOB_ID_PREFIX
        )
        try:
            job.result()
        except GoogleAPICallError as error:
            raise WarehouseError(_explain_model_import_error(error, model=model, model_path=model_path, job_id=job.job_id, location=self.location)) from error
        log.info("BigQuery job %s created model %s", job.job_id, model)

    # Jobs

    def _start_query(self, sql: str, job_config: bigquery.QueryJobConfig) -> Any:
        job = self.client.query(
            sql, job_config=job_config, location=self.location, project=self.job_project, job_id_prefix=JOB_ID_PREFIX
        )
        log.info("BigQuery job %s started in %s", job.job_id, self.location)
        return job

    def _wait(self, job: Any, *, what: str, **result_kwargs: Any) -> Any:
        from google.api_core.exceptions import GoogleAPICallError

        try:
            return job.result(**result_kwargs)
        except GoogleAPICallError as error:
            raise WarehouseError(
                f"BigQuery job {job.job_id} ({what}) failed: {error.message}. "
                f"Open the job in the BigQuery console (project {self.job_project}, location {self.location}) "
                f"for the failing statement, fix it and rerun the task."
            ) from error


def partition_decorator(table: TableRef, partition_date: dt.date) -> str:
    """Return ``project.dataset.table$YYYYMMDD``, the destination of one day partition."""
    if not isinstance(partition_date, dt.date) or isinstance(partition_date, dt.datetime):
        raise ValueError(f"`partition_date` must be a datetime.date, got {partition_date!r}.")
    return f"{table}${partition_date:%Y%m%d}"


def _count_rows_per_day(data: pa.Table, *, partition_column: str, table: TableRef) -> dict[dt.date, int]:
    import pyarrow as pa

    validate_column(partition_column, what="partition column")
    if partition_column not in data.column_names:
        raise WarehouseError(
            f"Cannot load into {table}: the data has no column {partition_column!r} "
            f"(columns: {data.column_names}). Add the partition column."
        )
    column = data.column(partition_column)
    if not pa.types.is_date(column.type):
        raise WarehouseError(
            f"Cannot load into {table}: column {partition_column!r} has type {column.type}, expected a date. "
            f"Cast it to date32 before loading."
        )
    if column.null_count:
        raise WarehouseError(
            f"Cannot load into {table}: column {partition_column!r} has {column.null_count} NULL values. "
            f"Every row needs the day it belongs to."
        )
    counts = data.group_by(partition_column).aggregate([(partition_column, "count")])
    days = counts.column(partition_column).to_pylist()
    rows = counts.column(f"{partition_column}_count").to_pylist()
    return dict(sorted(zip(days, rows)))


def _explain_model_import_error(error: Exception, *, model: TableRef, model_path: str, job_id: str, location: str | None) -> str:
    # NOTE: BigQuery reports these cases with HTTP 400 or 403 and a free-text message; the phrases
    # matched below are the usual wording, not a documented contract, so an unmatched message falls
    # through to the generic hint with BigQuery's own text.
    from google.api_core.exceptions import Forbidden

    message = getattr(error, "message", None) or str(error)
    lowered = message.lower()
    bucket = model_path.removeprefix("gs://").split("/", 1)[0]
    prefix = f"Creating model {model} from {model_path} failed in BigQuery job {job_id}: {message}."
    if isinstance(error, Forbidden) or "permission" in lowered or "access denied" in lowered:
        hint = (
            f"Grant the service account of the Airflow connection Storage Object Viewer on gs://{bucket} and "
            f"BigQuery Data Editor on dataset {model.project}.{model.dataset}."
        )
    elif "location" in lowered or "region" in lowered:
        hint = (
            f"The bucket gs://{bucket} and dataset {model.project}.{model.dataset} must be in the same location "
            f"as the job ({location}). Move the model store to a bucket in that location."
        )
    elif "too large" in lowered or "exceeds" in lowered or "size limit" in lowered:
        hint = (
            "The SavedModel is larger than BigQuery ML accepts for imported TensorFlow models. Shrink the "
            "vocabulary or embedding size and train again."
        )
    elif "op" in re.findall(r"[a-z]+", lowered) or "unsupported" in lowered or "not supported" in lowered:
        hint = (
            "The SavedModel uses a TensorFlow op that BigQuery ML cannot run. Run `python -m textclf check-model` "
            "on it and keep the model to the ops BigQuery ML supports."
        )
    else:
        hint = "Check that the SavedModel at that path is complete and readable, then rerun the task."
    return f"{prefix} {hint}"


# The table API still reports some types by their legacy names.
_LEGACY_TYPE_NAMES = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL", "RECORD": "STRUCT"}


def _standard_type_name(field_type: str, mode: str | None) -> str:
    type_name = _LEGACY_TYPE_NAMES.get(field_type, field_type)
    return f"ARRAY<{type_name}>" if mode == "REPEATED" else type_name
