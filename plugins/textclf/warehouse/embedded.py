"""The embedded warehouse: BigQuery SQL run on one DuckDB file, with ML.PREDICT done locally.

Only tasks import this module; DuckDB is imported when a connection opens.

A DuckDB file accepts one writing process at a time, and Airflow runs tasks in parallel processes.
So each operation opens its own connection and holds an exclusive ``flock`` on ``<database>.lock``
while it runs, and a process that finds the file locked by a program outside this class retries
with backoff until ``lock_timeout_seconds`` have passed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlglot import exp

from textclf.identifiers import TableRef, validate_column
from textclf.warehouse.base import QueryParameters, Warehouse, WarehouseError
from textclf.warehouse.translate import bind_parameters, parse_bigquery, to_duckdb

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from textclf.warehouse.ml_predict import LoadedModel, SignatureInfo

log = logging.getLogger(__name__)

REGISTRY_SCHEMA = "_textclf"
REGISTRY_TABLE = f'"{REGISTRY_SCHEMA}"."models"'
_DUCKDB_LOCK_MESSAGE = "Could not set lock on file"
_MAX_BACKOFF_SECONDS = 2.0

# Widening casts that keep every value, allowed when loaded data meets an existing column.
_INTEGER_RANK = {"TINYINT": 1, "SMALLINT": 2, "INTEGER": 3, "BIGINT": 4, "HUGEINT": 5}
_FLOAT_RANK = {"FLOAT": 1, "DOUBLE": 2}


class EmbeddedWarehouse(Warehouse):
    """A warehouse on a local DuckDB file that runs BigQuery SQL translated by sqlglot.

    :param database_path: the DuckDB database file; it and its folder are created on first use.
    :param lock_timeout_seconds: how long an operation waits for another process to release the file.
    :param predict_batch_size: rows per batch that ML.PREDICT sends through a model.
    """

    def __init__(
        self,
        database_path: str | os.PathLike[str],
        *,
        lock_timeout_seconds: float = 600.0,
        predict_batch_size: int | None = None,
    ) -> None:
        if lock_timeout_seconds < 0:
            raise ValueError(f"`lock_timeout_seconds` must be 0 or more, got {lock_timeout_seconds!r}.")
        if predict_batch_size is not None and predict_batch_size < 1:
            raise ValueError(f"`predict_batch_size` must be 1 or more, got {predict_batch_size!r}.")
        self.database_path = Path(database_path).expanduser().resolve()
        self.lock_path = self.database_path.with_name(self.database_path.name + ".lock")
        self.lock_timeout_seconds = lock_timeout_seconds
        self.predict_batch_size = predict_batch_size

    def __repr__(self) -> str:
        return f"EmbeddedWarehouse({str(self.database_path)!r})"

    # -- Warehouse interface -------------------------------------------------------------------

    def query(self, sql: str, parameters: QueryParameters | None = None) -> pa.Table:
        """Run a BigQuery query and return its result as an Arrow table.

        :param sql: one BigQuery query; ML.PREDICT runs the model locally.
        :param parameters: values for the query's ``@name`` parameters.
        """
        statement = _single_statement(sql)
        values = bind_parameters(statement, parameters)
        with self._connect() as connection, _PredictScope(self, connection) as scope:
            duckdb_sql, values = scope.prepare(statement, values)
            try:
                return connection.sql(duckdb_sql, params=values or None).to_arrow_table()
            except _duckdb_error() as error:
                raise WarehouseError(f"Query failed on {self.database_path}: {error}\nSQL: {duckdb_sql}") from error

    def execute(self, sql: str, parameters: QueryParameters | None = None) -> None:
        """Run BigQuery statements that return no rows: DDL, DML, ``CREATE MODEL`` or a script of several.

        :param sql: BigQuery statements separated by ``;``.
        :param parameters: values for the statements' ``@name`` parameters.
        """
        statements = parse_bigquery(sql)
        bound = [bind_parameters(statement, parameters) for statement in statements]

        # Models load before the database is locked: loading takes seconds and needs no database.
        models = {}
        for statement in statements:
            if _is_create_model(statement):
                models[id(statement)] = self._load_model_for(statement)

        with self._connect() as connection:
            for statement, values in zip(statements, bound, strict=True):
                if _is_create_model(statement):
                    self._register_model_statement(connection, statement, models[id(statement)])
                    continue
                self._ensure_schemas(connection, statement)
                with _PredictScope(self, connection) as scope:
                    duckdb_sql, statement_values = scope.prepare(statement, values)
                    try:
                        connection.execute(duckdb_sql, statement_values or None).fetchall()
                    except _duckdb_error() as error:
                        raise WarehouseError(
                            f"Statement failed on {self.database_path}: {error}\nSQL: {duckdb_sql}"
                        ) from error

    def write_partition(
        self,
        sql: str,
        parameters: QueryParameters | None,
        *,
        table: TableRef,
        partition_column: str,
        partition_date: dt.date,
    ) -> int:
        """Replace one day of ``table`` with the rows of a query, in one transaction.

        :param sql: a BigQuery query; every row must carry ``partition_date`` in ``partition_column``.
        :param parameters: values for the query's ``@name`` parameters.
        :param table: the day-partitioned table to write; created from the query's columns if missing.
        :param partition_column: the DATE column that partitions ``table``.
        :param partition_date: the day to replace.
        :return: the number of rows written.
        """
        validate_column(partition_column, what="partition column")
        if not isinstance(partition_date, dt.date) or isinstance(partition_date, dt.datetime):
            raise WarehouseError(f"`partition_date` must be a datetime.date, got {partition_date!r}.")
        statement = _single_statement(sql)
        if not isinstance(statement, exp.Query):
            raise WarehouseError(f"write_partition for table {table} needs a SELECT query, got: {sql.strip()[:200]}")
        values = bind_parameters(statement, parameters)
        target = _qualified(table)
        column = _quote(partition_column)
        started = time.monotonic()

        with self._connect() as connection, _PredictScope(self, connection) as scope:
            duckdb_sql, values = scope.prepare(statement, values)
            result_columns = self._describe_query(connection, duckdb_sql, values, table)
            self._check_partition_column(table, partition_column, result_columns, "the query result")
            connection.execute("BEGIN TRANSACTION")
            try:
                existing_columns = self._table_columns(connection, table)
                if existing_columns is None:
                    connection.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote(table.dataset)}")
                    definitions = ", ".join(f"{_quote(name)} {type_name}" for name, type_name in result_columns.items())
                    connection.execute(f"CREATE TABLE {target} ({definitions})")
                    log.info("Created table %s with columns %s", table, ", ".join(result_columns))
                else:
                    self._check_partition_column(table, partition_column, existing_columns, f"table {table}")
                    unknown = [name for name in result_columns if name not in existing_columns]
                    if unknown:
                        raise WarehouseError(
                            f"Cannot write to table {table}: the query returns column(s) {', '.join(unknown)} that the "
                            f"table lacks. Add them with ALTER TABLE or drop them from the query."
                        )

                deleted = connection.execute(
                    f"DELETE FROM {target} WHERE {column} = $partition_date", {"partition_date": partition_date}
                ).fetchall()[0][0]
                inserted = connection.execute(
                    f"INSERT INTO {target} BY NAME SELECT * FROM ({duckdb_sql})", values or None
                ).fetchall()[0][0]

                # Rows of other days are still in the table, so the inserted rows are the day's rows
                # only if the day now contains exactly as many rows as were inserted.
                in_partition = connection.execute(
                    f"SELECT count(*) FROM {target} WHERE {column} = $partition_date", {"partition_date": partition_date}
                ).fetchall()[0][0]
                if in_partition != inserted:
                    raise WarehouseError(
                        f"Cannot write partition {partition_date} of table {table}: {inserted - in_partition} of "
                        f"{inserted} rows have {partition_column} other than {partition_date} (or NULL). Filter the "
                        f"query on {partition_column} = the run's date; the partition keeps its previous rows."
                    )
                connection.execute("COMMIT")
            except BaseException as error:
                connection.execute("ROLLBACK")
                if isinstance(error, _duckdb_error()):
                    raise WarehouseError(f"Writing partition {partition_date} of table {table} failed: {error}") from error
                raise

        log.info(
            "Wrote partition %s of %s: %d rows (replaced %d) in %.2f s",
            partition_date,
            table,
            inserted,
            deleted,
            time.monotonic() - started,
        )
        return int(inserted)

    def load_partitions(self, data: pa.Table, *, table: TableRef, partition_column: str) -> dict[dt.date, int]:
        """Replace each day present in ``data`` in ``table``, all days in one transaction.

        :param data: the rows to load; ``partition_column`` must be a DATE column without NULLs.
        :param table: the day-partitioned table; created from ``data``'s columns if missing.
        :param partition_column: the DATE column that partitions ``table``.
        :return: the number of rows written per day.
        """
        import pyarrow as pa
        import pyarrow.compute as pc

        validate_column(partition_column, what="partition column")
        if partition_column not in data.column_names:
            raise WarehouseError(
                f"Cannot load into table {table}: the data has no partition column {partition_column!r} "
                f"(columns: {', '.join(data.column_names)}). Add it or pass the right partition column."
            )
        if not pa.types.is_date(data.schema.field(partition_column).type):
            raise WarehouseError(
                f"Cannot load into table {table}: partition column {partition_column!r} has type "
                f"{data.schema.field(partition_column).type}, expected DATE. Convert it to dates first."
            )
        null_days = data.column(partition_column).null_count
        if null_days:
            raise WarehouseError(
                f"Cannot load into table {table}: {null_days} rows have NULL {partition_column!r}. Every row needs a day."
            )
        data = _with_typed_null_columns(data)
        counts = data.group_by(partition_column).aggregate([([], "count_all")])
        rows_per_day = {
            day: int(count)
            for day, count in zip(
                counts.column(partition_column).to_pylist(), counts.column("count_all").to_pylist(), strict=True
            )
        }
        if not rows_per_day:
            log.info("No rows to load into %s", table)
            return {}
        target = _qualified(table)
        column = _quote(partition_column)
        staging = f"_textclf_load_{uuid.uuid4().hex}"
        days = pa.table({"day": pc.unique(data.column(partition_column)).cast(pa.date32())})
        days_view = f"{staging}_days"
        started = time.monotonic()

        with self._connect() as connection:
            connection.register(staging, data)
            connection.register(days_view, days)
            try:
                data_columns = dict(
                    (name, str(type_name))
                    for name, type_name in zip(
                        connection.sql(f"SELECT * FROM {staging}").columns,
                        connection.sql(f"SELECT * FROM {staging}").types,
                        strict=True,
                    )
                )
                existing_columns = self._table_columns(connection, table)
                if existing_columns is not None:
                    self._check_compatible(table, partition_column, data_columns, existing_columns)

                connection.execute("BEGIN TRANSACTION")
                try:
                    if existing_columns is None:
                        connection.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote(table.dataset)}")
                        connection.execute(f"CREATE TABLE {target} AS SELECT * FROM {staging} LIMIT 0")
                        log.info("Created table %s with columns %s", table, ", ".join(data_columns))
                    connection.execute(f"DELETE FROM {target} WHERE {column} IN (SELECT day FROM {days_view})")
                    connection.execute(f"INSERT INTO {target} BY NAME SELECT * FROM {staging}")
                    connection.execute("COMMIT")
                except BaseException as error:
                    connection.execute("ROLLBACK")
                    if isinstance(error, _duckdb_error()):
                        raise WarehouseError(f"Loading into table {table} failed: {error}") from error
                    raise
            finally:
                connection.unregister(staging)
                connection.unregister(days_view)

        log.info(
            "Loaded %d rows into %s, replacing %d day(s) from %s to %s, in %.2f s",
            data.num_rows,
            table,
            len(rows_per_day),
            min(rows_per_day),
            max(rows_per_day),
            time.monotonic() - started,
        )
        return dict(sorted(rows_per_day.items()))

    def create_model(self, model: TableRef, model_path: str, *, replace: bool = True) -> None:
        """Register a SavedModel under a model name, after checking that its serving signature serves.

        :param model: the model name that ML.PREDICT will use.
        :param model_path: the SavedModel folder or ``file://`` URI, optionally ending in ``/*``.
        :param replace: replace an existing model of that name; if False, an existing one is an error.
        """
        loaded = self._load_model(model_path)
        with self._connect() as connection:
            self._register_model(connection, model, model_path, loaded, replace=replace, if_not_exists=False)

    def table_exists(self, table: TableRef) -> bool:
        """Return whether ``table`` exists in the database."""
        if not self.database_path.exists():
            return False
        with self._connect() as connection:
            return self._table_columns(connection, table) is not None

    def table_columns(self, table: TableRef) -> dict[str, str] | None:
        """Return the columns of ``table`` with their BigQuery types, or None if it does not exist."""
        if not self.database_path.exists():
            return None
        with self._connect() as connection:
            columns = self._table_columns(connection, table)
        if columns is None:
            return None
        return {name: bigquery_type_name(duckdb_type) for name, duckdb_type in columns.items()}

    # -- Connections and locks -----------------------------------------------------------------

    @contextlib.contextmanager
    def _connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open a connection for one operation, holding the lock file the whole time."""
        deadline = time.monotonic() + self.lock_timeout_seconds
        with self._process_lock(deadline):
            connection = self._open_database(deadline)
            try:
                yield connection
            finally:
                connection.close()

    @contextlib.contextmanager
    def _process_lock(self, deadline: float) -> Iterator[None]:
        self.database_path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            waited_since = None
            while True:
                try:
                    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if waited_since is None:
                        waited_since = time.monotonic()
                        log.info(
                            "Waiting for %s: another process is using the embedded warehouse (timeout %.0f s)",
                            self.lock_path,
                            self.lock_timeout_seconds,
                        )
                    if time.monotonic() >= deadline:
                        raise WarehouseError(
                            f"Timed out after {self.lock_timeout_seconds:.0f} s waiting for the lock file "
                            f"{self.lock_path} of database {self.database_path}: another process has it locked. Wait for "
                            f"that task to finish, or raise `lock_timeout_seconds`."
                        ) from None
                    time.sleep(0.05)
            if waited_since is not None:
                log.info("Acquired %s after %.1f s", self.lock_path, time.monotonic() - waited_since)
            yield
        finally:
            # Closing the descriptor releases the flock.
            os.close(descriptor)

    def _open_database(self, deadline: float) -> duckdb.DuckDBPyConnection:
        import duckdb

        backoff = 0.05
        attempts = 0
        while True:
            attempts += 1
            try:
                return duckdb.connect(str(self.database_path))
            except duckdb.IOException as error:
                if _DUCKDB_LOCK_MESSAGE not in str(error):
                    raise WarehouseError(f"Failed to open the DuckDB database {self.database_path}: {error}") from error
                if time.monotonic() + backoff > deadline:
                    raise WarehouseError(
                        f"Database file {self.database_path} is locked by another program (tried {attempts} times "
                        f"over {self.lock_timeout_seconds:.0f} s): {error}. Close the other DuckDB session that has "
                        f"the file open, e.g. a DuckDB shell or a notebook, then rerun."
                    ) from error
                log.warning(
                    "Database %s is locked by another program; retrying in %.2f s (attempt %d)",
                    self.database_path,
                    backoff,
                    attempts,
                )
                time.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_SECONDS)

    # -- Models ----------------------------------------------------------------------------------

    def _load_model(self, model_path: str) -> LoadedModel:
        from textclf.warehouse.ml_predict import check_serving, load_model, saved_model_dir_from_path

        loaded = load_model(saved_model_dir_from_path(model_path))
        check_serving(loaded)
        return loaded

    def _load_model_for(self, statement: exp.Create) -> LoadedModel:
        options = _model_options(statement)
        model_type = options.get("model_type", "")
        if model_type.upper() != "TENSORFLOW":
            raise WarehouseError(
                f"CREATE MODEL {_display_name(statement.this)}: model_type={model_type!r} is not supported by the "
                f"embedded warehouse, which imports only model_type='TENSORFLOW' SavedModels. Use BigQuery for other "
                f"model types."
            )
        if "model_path" not in options:
            raise WarehouseError(
                f"CREATE MODEL {_display_name(statement.this)} has no model_path option: add "
                f"OPTIONS(model_type='TENSORFLOW', model_path='<SavedModel folder>')."
            )
        return self._load_model(options["model_path"])

    def _register_model_statement(self, connection: Any, statement: exp.Create, loaded: LoadedModel) -> None:
        table = statement.this
        model = TableRef(table.catalog or "embedded-project", table.db, table.name)
        self._register_model(
            connection,
            model,
            _model_options(statement)["model_path"],
            loaded,
            replace=bool(statement.args.get("replace")),
            if_not_exists=bool(statement.args.get("exists")),
        )

    def _register_model(
        self, connection: Any, model: TableRef, model_path: str, loaded: LoadedModel, *, replace: bool, if_not_exists: bool
    ) -> None:
        _ensure_registry(connection)
        key = _model_key(model.dataset, model.table)
        exists = connection.execute(f"SELECT count(*) FROM {REGISTRY_TABLE} WHERE model_name = $name", {"name": key})
        if exists.fetchall()[0][0]:
            if if_not_exists:
                log.info("Model %s already exists; CREATE MODEL IF NOT EXISTS leaves it", model)
                return
            if not replace:
                raise WarehouseError(
                    f"Model {model.sql} already exists. Use CREATE OR REPLACE MODEL to replace it, or pick another name."
                )
        connection.execute(
            f"INSERT OR REPLACE INTO {REGISTRY_TABLE} VALUES ($name, $path, $signature, current_timestamp)",
            {"name": key, "path": str(loaded.saved_model_dir), "signature": loaded.signature.to_json()},
        )
        log.info("Created model %s from SavedModel %s (requested as %s)", model, loaded.saved_model_dir, model_path)

    def _lookup_model(self, connection: Any, model: exp.Table) -> tuple[str, SignatureInfo]:
        from textclf.warehouse.ml_predict import SignatureInfo

        _ensure_registry(connection)
        rows = connection.execute(
            f"SELECT model_path, signature FROM {REGISTRY_TABLE} WHERE model_name = $name",
            {"name": _model_key(model.db, model.name)},
        ).fetchall()
        if not rows:
            name = _display_name(model)
            raise WarehouseError(
                f"Model {name} not found: create it with CREATE MODEL {name} "
                f"OPTIONS(model_type='TENSORFLOW', model_path='<SavedModel folder>')."
            )
        return rows[0][0], SignatureInfo.from_json(rows[0][1])

    # -- Tables ----------------------------------------------------------------------------------

    def _describe_query(self, connection: Any, duckdb_sql: str, values: dict[str, Any], table: TableRef) -> dict[str, str]:
        # A relation binds without running, so this reads no rows, not even from an ML.PREDICT stream.
        try:
            relation = connection.sql(duckdb_sql, params=values or None)
        except _duckdb_error() as error:
            raise WarehouseError(f"Query for table {table} failed: {error}\nSQL: {duckdb_sql}") from error
        return {name: str(type_name) for name, type_name in zip(relation.columns, relation.types, strict=True)}

    @staticmethod
    def _table_columns(connection: Any, table: TableRef) -> dict[str, str] | None:
        rows = connection.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = $schema AND table_name = $table ORDER BY ordinal_position",
            {"schema": table.dataset, "table": table.table},
        ).fetchall()
        return {name: type_name for name, type_name in rows} or None

    @staticmethod
    def _check_partition_column(table: TableRef, partition_column: str, columns: dict[str, str], where: str) -> None:
        if partition_column not in columns:
            raise WarehouseError(
                f"Cannot write to table {table}: {where} has no partition column {partition_column!r} "
                f"(columns: {', '.join(columns)}). Select a DATE column named {partition_column!r}."
            )
        if columns[partition_column] != "DATE":
            raise WarehouseError(
                f"Cannot write to table {table}: partition column {partition_column!r} in {where} has type "
                f"{columns[partition_column]}, expected DATE. CAST it to DATE."
            )

    @staticmethod
    def _check_compatible(
        table: TableRef, partition_column: str, data_columns: dict[str, str], table_columns: dict[str, str]
    ) -> None:
        EmbeddedWarehouse._check_partition_column(table, partition_column, table_columns, f"table {table}")
        # INSERT BY NAME would fill a missing column with NULLs, and a file that lacks a column is
        # far more often a wrong file than a wish for NULLs.
        missing = [name for name in table_columns if name not in data_columns]
        if missing:
            raise WarehouseError(
                f"Cannot load into table {table}: the data has no column(s) {', '.join(map(repr, missing))}, which the "
                f"table has (columns of the data: {', '.join(data_columns)}). Add them to the data, or load into a "
                f"new table."
            )
        for name, data_type in data_columns.items():
            if name not in table_columns:
                raise WarehouseError(
                    f"Cannot load into table {table}: column {name!r} of the data is not in the table (columns: "
                    f"{', '.join(table_columns)}). Add it with ALTER TABLE, or drop it from the data."
                )
            if not _widens_to(data_type, table_columns[name]):
                raise WarehouseError(
                    f"Cannot load into table {table}: column {name!r} has type {data_type} in the data but "
                    f"{table_columns[name]} in the table. Convert the column to {table_columns[name]}, or load "
                    f"into a new table."
                )

    @staticmethod
    def _ensure_schemas(connection: Any, statement: exp.Expression) -> None:
        # BigQuery datasets become DuckDB schemas, created on demand by statements that write.
        if isinstance(statement, exp.Query):
            return
        for schema in sorted({table.db for table in statement.find_all(exp.Table) if table.db}):
            connection.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote(schema)}")


class _PredictScope:
    """Replaces each ML.PREDICT in a statement by a registered stream of predictions, and cleans up."""

    def __init__(self, warehouse: EmbeddedWarehouse, connection: Any) -> None:
        self._warehouse = warehouse
        self._connection = connection
        self._views: list[str] = []
        self._cursors: list[Any] = []

    def __enter__(self) -> _PredictScope:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._views:
            self._connection.execute("RESET threads")
        for view in self._views:
            self._connection.unregister(view)
        for cursor in self._cursors:
            cursor.close()

    def prepare(self, statement: exp.Expression, values: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Return the DuckDB SQL of ``statement`` and the parameter values it still uses."""
        predicts = list(statement.find_all(exp.Predict))
        if not predicts:
            return to_duckdb(statement, values), values
        statement = statement.copy()
        # TensorFlow's threads do the work while predicting; DuckDB threads beside them only contend
        # for the cores (measured: 146,000 rows took 0.41 s with 1 DuckDB thread, 0.53 s with 2).
        self._connection.execute("SET threads = 1")
        # Innermost first, so an ML.PREDICT inside another one's input query is replaced before its parent.
        for predict in reversed(list(statement.find_all(exp.Predict))):
            view = self._stream_predictions(predict, values)
            holder = predict.parent
            if not isinstance(holder, exp.Table):
                raise WarehouseError("ML.PREDICT is supported only in FROM, as ML.PREDICT(MODEL m, (query)) or TABLE t.")
            holder.set("this", exp.to_identifier(view))
            holder.set("db", None)
            holder.set("catalog", None)
        remaining = {name: values[name] for name in values if any(p.name == name for p in statement.find_all(exp.Parameter))}
        return to_duckdb(statement, remaining), remaining

    def _stream_predictions(self, predict: exp.Predict, values: dict[str, Any]) -> str:
        from textclf.warehouse.ml_predict import DEFAULT_BATCH_SIZE, load_model, predict_batches

        model = predict.this
        model_name = _display_name(model)
        model_path, _ = self._warehouse._lookup_model(self._connection, model)
        loaded = load_model(Path(model_path))

        source = predict.expression
        if isinstance(source, exp.Subquery):
            source = source.this
        elif isinstance(source, exp.Table):
            source = exp.select("*").from_(source.copy())
        else:
            raise WarehouseError(f"ML.PREDICT with model {model_name}: the second argument must be (query) or TABLE t.")
        if predict.args.get("params_struct") is not None:
            raise WarehouseError(f"ML.PREDICT with model {model_name}: the STRUCT of options is not supported here.")
        source_values = {name: values[name] for name in values if any(p.name == name for p in source.find_all(exp.Parameter))}
        source_sql = to_duckdb(source, source_values)

        # The input query runs on its own cursor so the outer statement can pull its batches lazily.
        cursor = self._connection.cursor()
        self._cursors.append(cursor)
        try:
            reader = cursor.sql(source_sql, params=source_values or None).to_arrow_reader(
                self._warehouse.predict_batch_size or DEFAULT_BATCH_SIZE
            )
        except _duckdb_error() as error:
            raise WarehouseError(f"ML.PREDICT with model {model_name}: the input query failed: {error}") from error
        try:
            predictions = predict_batches(model_name, loaded, reader)
        except BaseException:
            # An open reader keeps the database instance alive after the connection closes, and while
            # it lives (for example in the traceback of this error) a new connection to the file in
            # this process hangs in duckdb.connect (DuckDB 2.0.0).
            reader.close()
            raise
        view = f"_textclf_predict_{uuid.uuid4().hex}"
        self._connection.register(view, predictions)
        self._views.append(view)
        return view


def _single_statement(sql: str) -> exp.Expression:
    statements = parse_bigquery(sql)
    if len(statements) != 1:
        raise WarehouseError(f"Expected one SQL statement, got {len(statements)}. Use execute() for scripts.")
    return statements[0]


def _is_create_model(statement: exp.Expression) -> bool:
    return isinstance(statement, exp.Create) and (statement.args.get("kind") or "").upper() == "MODEL"


def _model_options(statement: exp.Create) -> dict[str, str]:
    options = {}
    properties = statement.args.get("properties")
    for prop in properties.expressions if properties else []:
        if isinstance(prop, exp.Property) and isinstance(prop.args.get("value"), exp.Literal):
            options[prop.name.lower()] = prop.args["value"].this
    return options


def _ensure_registry(connection: Any) -> None:
    connection.execute(f"CREATE SCHEMA IF NOT EXISTS {REGISTRY_SCHEMA}")
    connection.execute(
        f"CREATE TABLE IF NOT EXISTS {REGISTRY_TABLE} ("
        "model_name VARCHAR PRIMARY KEY, model_path VARCHAR NOT NULL, signature VARCHAR NOT NULL, "
        "created_at TIMESTAMPTZ NOT NULL)"
    )


def _model_key(dataset: str, name: str) -> str:
    # The project is dropped, as for tables: one DuckDB file is one project.
    return f"{dataset}.{name}"


def _display_name(table: exp.Table) -> str:
    return "`" + ".".join(part for part in (table.catalog, table.db, table.name) if part) + "`"


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _qualified(table: TableRef) -> str:
    return f"{_quote(table.dataset)}.{_quote(table.table)}"


def _widens_to(data_type: str, table_type: str) -> bool:
    if data_type == table_type or data_type == '"NULL"' or data_type == "NULL":
        return True
    if data_type in _INTEGER_RANK and table_type in _INTEGER_RANK:
        return _INTEGER_RANK[data_type] <= _INTEGER_RANK[table_type]
    if data_type in _FLOAT_RANK and table_type in _FLOAT_RANK:
        return _FLOAT_RANK[data_type] <= _FLOAT_RANK[table_type]
    return data_type in _INTEGER_RANK and table_type == "DOUBLE"


def _with_typed_null_columns(data: pa.Table) -> pa.Table:
    # A column with only NULLs has Arrow type null; store it as STRING, BigQuery's type for such a column.
    import pyarrow as pa

    for index, field in enumerate(data.schema):
        if pa.types.is_null(field.type):
            data = data.set_column(index, pa.field(field.name, pa.string()), data.column(index).cast(pa.string()))
    return data


def _duckdb_error() -> type[Exception]:
    import duckdb

    return duckdb.Error


# DuckDB type names, as information_schema.columns spells them, and the BigQuery type each stands for.
_BIGQUERY_TYPE_NAMES = {
    "VARCHAR": "STRING",
    "BLOB": "BYTES",
    "BOOLEAN": "BOOL",
    "TINYINT": "INT64",
    "SMALLINT": "INT64",
    "INTEGER": "INT64",
    "BIGINT": "INT64",
    "HUGEINT": "INT64",
    "UTINYINT": "INT64",
    "USMALLINT": "INT64",
    "UINTEGER": "INT64",
    "UBIGINT": "INT64",
    "FLOAT": "FLOAT64",
    "DOUBLE": "FLOAT64",
    "DATE": "DATE",
    "TIMESTAMP": "DATETIME",
    "TIMESTAMP WITH TIME ZONE": "TIMESTAMP",
    "TIME": "TIME",
    "INTERVAL": "INTERVAL",
    "JSON": "JSON",
}


def bigquery_type_name(duckdb_type: str) -> str:
    """Return the BigQuery type name for a DuckDB column type, e.g. ``VARCHAR[]`` -> ``ARRAY<STRING>``."""
    if duckdb_type.endswith("[]"):
        return f"ARRAY<{bigquery_type_name(duckdb_type[:-2])}>"
    if duckdb_type.startswith("STRUCT"):
        return "STRUCT"
    if duckdb_type.startswith("DECIMAL"):
        return "NUMERIC"
    return _BIGQUERY_TYPE_NAMES.get(duckdb_type, duckdb_type)
