"""The warehouse interface that every operator uses, whichever backend runs the SQL.

SQL handed to a warehouse is always BigQuery SQL, as rendered from ``sql/*.sql``. Values travel as
query parameters (``@run_date``), never inside the text.
"""

from __future__ import annotations

import abc
import datetime as dt
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

    from textclf.identifiers import TableRef

QueryParameters = Mapping[str, Any]


class WarehouseError(RuntimeError):
    """Raised when the warehouse rejects a statement; the message names the object and the fix."""


class Warehouse(abc.ABC):
    """A SQL warehouse that runs BigQuery SQL, writes day partitions and serves imported models.

    Parameters map names to Python values: ``str``, ``int``, ``float``, ``bool``, ``datetime.date``,
    ``datetime.datetime`` or lists of those. Each backend binds them with its own typed parameters.
    """

    @abc.abstractmethod
    def query(self, sql: str, parameters: QueryParameters | None = None) -> pa.Table:
        """Run a query and return its result as an Arrow table.

        :param sql: a BigQuery SQL query.
        :param parameters: values for the query's ``@name`` parameters.
        """

    @abc.abstractmethod
    def execute(self, sql: str, parameters: QueryParameters | None = None) -> None:
        """Run a statement that returns no rows (DDL, DML or a script)."""

    @abc.abstractmethod
    def write_partition(
        self,
        sql: str,
        parameters: QueryParameters | None,
        *,
        table: TableRef,
        partition_column: str,
        partition_date: dt.date,
    ) -> int:
        """Replace one day partition of ``table`` with the result of a query, atomically.

        The table is created, partitioned by day on ``partition_column``, on the first write. Every
        row of the result must carry ``partition_date`` in ``partition_column``; other partitions are
        left untouched, and on any error the partition keeps its previous rows.

        :return: the number of rows written.
        """

    @abc.abstractmethod
    def load_partitions(self, data: pa.Table, *, table: TableRef, partition_column: str) -> dict[dt.date, int]:
        """Load rows into a day-partitioned table, replacing each day partition present in ``data``.

        Days absent from ``data`` are left untouched. The load is one atomic step: on error nothing
        is written.

        :return: the number of rows written per day.
        """

    @abc.abstractmethod
    def create_model(self, model: TableRef, model_path: str, *, replace: bool = True) -> None:
        """Create (or replace) a TensorFlow model from a SavedModel location.

        Runs ``CREATE [OR REPLACE] MODEL model OPTIONS(model_type='TENSORFLOW', model_path=...)``.
        """

    @abc.abstractmethod
    def table_exists(self, table: TableRef) -> bool:
        """Return whether ``table`` exists."""

    @abc.abstractmethod
    def table_columns(self, table: TableRef) -> dict[str, str] | None:
        """Return the columns of ``table`` and their BigQuery types (``STRING``, ``DATE``, ``INT64``, ...).

        Returns None when the table does not exist. Reading the schema runs no query job.
        """

    def close(self) -> None:
        """Release connections; the default does nothing."""

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
