"""Fake BigQuery and Cloud Storage clients that record every request and return canned results.

They stand in for ``google.cloud.bigquery.Client``, ``BigQueryReadClient`` and
``google.cloud.storage.Client`` at the edge of the system, so tests can assert the complete job
configuration (``job.job_config.to_api_repr()``) and the exact order of object writes.
"""

from __future__ import annotations

import itertools
import re
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
from google.api_core.exceptions import NotFound


class FakeReadClient:
    """Stands in for ``BigQueryReadClient``; the row iterators record that it was used."""

    def __init__(self, credentials: Any = None) -> None:
        self.credentials = credentials


class FakeRowIterator:
    """The result of a finished query job: a row count and an Arrow table."""

    def __init__(self, job: FakeJob, table: pa.Table) -> None:
        self.job = job
        self.table = table
        self.total_rows = table.num_rows

    def to_arrow(self, bqstorage_client: Any = None, create_bqstorage_client: bool = True) -> pa.Table:
        self.job.read_with = bqstorage_client
        return self.table


class FakeJob:
    """A recorded BigQuery job: its kind, SQL or source, full configuration and location."""

    def __init__(self, client: FakeBigQueryClient, kind: str, **request: Any) -> None:
        self.client = client
        self.kind = kind
        self.job_id = f"textclf_job_{next(client._job_numbers)}"
        self.query = request.pop("query", None)
        self.job_config = request.pop("job_config", None)
        self.location = request.pop("location", None)
        self.project = request.pop("project", None)
        self.request = request
        self.result_table: pa.Table = client._next_result()
        self.error: Exception | None = client._next_error()
        self.result_kwargs: dict[str, Any] | None = None
        self.read_with: Any = None
        self.loaded_table: pa.Table | None = None

    @property
    def destination(self) -> Any:
        return getattr(self.job_config, "destination", None)

    def result(self, **kwargs: Any) -> FakeRowIterator:
        self.result_kwargs = kwargs
        if self.client.while_waiting is not None:
            self.client.while_waiting(self)
        if self.error is not None:
            raise self.error
        return FakeRowIterator(self, self.result_table)

    @property
    def output_rows(self) -> int | None:
        return None if self.loaded_table is None else self.loaded_table.num_rows


class FakeTable:
    """A table as ``get_table`` returns it, with the properties the warehouse updates."""

    def __init__(self, table_id: str, schema: list[Any] | None = None) -> None:
        self.table_id = table_id
        self.schema = list(schema or [])
        self.expires = None


class FakeBigQueryClient:
    """A BigQuery client that records jobs and table calls instead of sending them.

    Queue Arrow results with :meth:`add_result` and failures with :meth:`add_error`. Each job takes
    the next one in order, and jobs past the queue return an empty table and succeed. Set
    ``while_waiting`` to a function of the job to act while a caller waits in ``job.result()``,
    e.g. to kill the task.
    """

    def __init__(
        self, project: str = "textclf-test", tables: set[str] | None = None, schemas: dict[str, list[Any]] | None = None
    ) -> None:
        self.project = project
        self.schemas: dict[str, list[Any]] = dict(schemas or {})
        self.tables: set[str] = set(tables or ()) | set(self.schemas)
        self.jobs: list[FakeJob] = []
        self.calls: list[tuple[Any, ...]] = []
        self._results: deque[pa.Table] = deque()
        self._errors: deque[Exception | None] = deque()
        self._job_numbers = itertools.count(1)
        self.closed = False
        self.while_waiting: Callable[[FakeJob], None] | None = None

    def add_result(self, table: pa.Table) -> None:
        self._results.append(table)

    def add_error(self, error: Exception | None) -> None:
        """Make the next job raise ``error`` from ``result()``; None lets the next job succeed."""
        self._errors.append(error)

    def _next_result(self) -> pa.Table:
        return self._results.popleft() if self._results else pa.table({})

    def _next_error(self) -> Exception | None:
        return self._errors.popleft() if self._errors else None

    def query(self, query: str, job_config: Any = None, **request: Any) -> FakeJob:
        job = FakeJob(self, "query", query=query, job_config=job_config, **request)
        self.jobs.append(job)
        self.calls.append(("query", job.job_id))
        return job

    def load_table_from_file(self, file_obj: Any, destination: str, job_config: Any = None, **request: Any) -> FakeJob:
        import pyarrow.parquet as pq

        job = FakeJob(self, "load", job_config=job_config, destination_table=destination, **request)
        job.loaded_table = pq.read_table(file_obj)
        self.jobs.append(job)
        self.tables.add(str(destination))
        self.calls.append(("load_table_from_file", job.job_id, str(destination)))
        return job

    def get_job(self, job_id: str, project: str | None = None, location: str | None = None) -> FakeJob:
        self.calls.append(("get_job", job_id, project, location))
        for job in self.jobs:
            if job.job_id == job_id:
                return job
        raise NotFound(f"Job {job_id} not found")

    def cancel_job(self, job_id: str, project: str | None = None, location: str | None = None) -> None:
        self.calls.append(("cancel_job", job_id, project, location))

    def get_table(self, table: str) -> FakeTable:
        self.calls.append(("get_table", str(table)))
        if str(table) not in self.tables:
            raise NotFound(f"Table {table} not found")
        return FakeTable(str(table), self.schemas.get(str(table)))

    def update_table(self, table: FakeTable, fields: list[str]) -> FakeTable:
        self.calls.append(("update_table", table.table_id, tuple(fields), table.expires))
        return table

    def delete_table(self, table: str, not_found_ok: bool = False) -> None:
        self.calls.append(("delete_table", str(table), not_found_ok))
        self.tables.discard(str(table))

    def close(self) -> None:
        self.closed = True


class FakeBigQueryHook:
    """Stands in for the provider's ``BigQueryHook``: records its arguments and hands out ``client``.

    ``client_requests`` lists the arguments of every ``get_client`` call.
    """

    def __init__(self, client: FakeBigQueryClient, credentials: Any = None, **kwargs: Any) -> None:
        self.client = client
        self.credentials = credentials
        self.kwargs = kwargs
        self.client_requests: list[dict[str, Any]] = []

    @property
    def project_id(self) -> str:
        return self.client.project

    def get_client(self, project_id: str | None = None, location: str | None = None) -> FakeBigQueryClient:
        self.client_requests.append({"project_id": project_id, "location": location})
        return self.client

    def get_credentials(self) -> Any:
        return self.credentials


# Cloud Storage


class FakeBlob:
    """An object handle as ``bucket.blob(name)`` returns it."""

    def __init__(self, bucket: FakeBucket, name: str) -> None:
        self.bucket = bucket
        self.name = name

    @property
    def _key(self) -> tuple[str, str]:
        return (self.bucket.name, self.name)

    @property
    def size(self) -> int:
        return len(self.bucket.client.objects[self._key])

    def upload_from_filename(self, filename: str, **kwargs: Any) -> None:
        self.bucket.client._record("upload", f"gs://{self.bucket.name}/{self.name}")
        self.bucket.client.objects[self._key] = Path(filename).read_bytes()

    def upload_from_string(self, data: bytes | str, content_type: str | None = None, **kwargs: Any) -> None:
        self.bucket.client._record("upload", f"gs://{self.bucket.name}/{self.name}")
        self.bucket.client.objects[self._key] = data.encode() if isinstance(data, str) else data

    def download_to_filename(self, filename: str, **kwargs: Any) -> None:
        self.bucket.client._record("download", f"gs://{self.bucket.name}/{self.name}")
        Path(filename).write_bytes(self._read())

    def download_as_bytes(self, **kwargs: Any) -> bytes:
        self.bucket.client._record("download", f"gs://{self.bucket.name}/{self.name}")
        return self._read()

    def _read(self) -> bytes:
        try:
            return self.bucket.client.objects[self._key]
        except KeyError:
            raise NotFound(f"gs://{self.bucket.name}/{self.name} not found") from None

    def exists(self, **kwargs: Any) -> bool:
        return self._key in self.bucket.client.objects

    def delete(self, **kwargs: Any) -> None:
        if self._key not in self.bucket.client.objects:
            raise NotFound(f"gs://{self.bucket.name}/{self.name} not found")
        self.bucket.client._record("delete", f"gs://{self.bucket.name}/{self.name}")
        del self.bucket.client.objects[self._key]


class FakeBucket:
    """A bucket handle as ``client.bucket(name)`` returns it."""

    def __init__(self, client: FakeStorageClient, name: str) -> None:
        self.client = client
        self.name = name

    def blob(self, name: str) -> FakeBlob:
        return FakeBlob(self, name)

    def copy_blob(self, blob: FakeBlob, destination_bucket: FakeBucket, new_name: str, **kwargs: Any) -> FakeBlob:
        self.client._record("copy", f"gs://{self.name}/{blob.name}", f"gs://{destination_bucket.name}/{new_name}")
        self.client.objects[(destination_bucket.name, new_name)] = blob._read()
        return FakeBlob(destination_bucket, new_name)


class FakeStorageClient:
    """A Cloud Storage client over an in-memory dict of ``(bucket, name) -> bytes``.

    ``operations`` lists every write, copy, delete and download in order, e.g.
    ``("upload", "gs://bucket/models/20141201/_COMPLETE")``.
    """

    def __init__(self, objects: dict[tuple[str, str], bytes] | None = None) -> None:
        self.objects: dict[tuple[str, str], bytes] = dict(objects or {})
        self.operations: list[tuple[str, ...]] = []
        self.list_requests: list[dict[str, Any]] = []

    def _record(self, *operation: str) -> None:
        self.operations.append(operation)

    def bucket(self, name: str) -> FakeBucket:
        return FakeBucket(self, name)

    def list_blobs(self, bucket_or_name: Any, prefix: str | None = None, match_glob: str | None = None, **kwargs: Any) -> list[FakeBlob]:
        bucket_name = getattr(bucket_or_name, "name", bucket_or_name)
        self.list_requests.append({"bucket": bucket_name, "prefix": prefix, "match_glob": match_glob, **kwargs})
        bucket = FakeBucket(self, bucket_name)
        names = sorted(name for (owner, name) in self.objects if owner == bucket_name and name.startswith(prefix or ""))
        if match_glob is not None:
            pattern = _glob_to_regex(match_glob)
            names = [name for name in names if pattern.fullmatch(name)]
        return [FakeBlob(bucket, name) for name in names]


class FakeGCSHook:
    """Stands in for the provider's ``GCSHook``: records its arguments and hands out ``client``."""

    def __init__(self, client: FakeStorageClient, **kwargs: Any) -> None:
        self.client = client
        self.kwargs = kwargs

    def get_conn(self) -> FakeStorageClient:
        return self.client


def _glob_to_regex(glob: str) -> re.Pattern[str]:
    # Cloud Storage globs: "*" stays within one path segment, "**" crosses segments.
    parts = [re.escape(part).replace(r"\*", "[^/]*") for part in glob.split("**")]
    return re.compile(".*".join(parts))


__all__ = [
    "FakeBigQueryClient",
    "FakeBigQueryHook",
    "FakeBlob",
    "FakeBucket",
    "FakeGCSHook",
    "FakeJob",
    "FakeReadClient",
    "FakeRowIterator",
    "FakeStorageClient",
]
