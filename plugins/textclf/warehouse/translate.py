"""Translation of BigQuery SQL into DuckDB SQL for the embedded warehouse, with sqlglot.

Besides sqlglot's own dialect translation, a few AST transforms make the result mean what BigQuery
means:

* ``project.dataset.table`` becomes ``dataset.table``: a DuckDB schema per dataset, project dropped.
* ``@name`` parameters become DuckDB ``$name`` parameters, cast to the BigQuery type of the bound
  Python value, so an ``int`` is an INT64 (BIGINT) as in BigQuery rather than DuckDB's INTEGER.
* ``DATE_ADD``/``DATE_SUB`` on a DATE stay a DATE: DuckDB's ``date - INTERVAL`` is a TIMESTAMP.
* ``TRIM(x)`` removes all leading and trailing whitespace, as BigQuery's does: DuckDB's one-argument
  ``trim`` removes only spaces, so a text of tabs and newlines would not count as blank.
* ``COUNTIF`` stays an INT64: DuckDB's ``COUNT_IF`` returns a HUGEINT, which Arrow reads as a decimal.
* ``ARRAY_AGG(x ORDER BY y LIMIT n)`` becomes a list slice, since DuckDB has no LIMIT in aggregates.
* BigQuery-only table options (``PARTITION BY``, ``CLUSTER BY``, ``OPTIONS``) are dropped: DuckDB has
  no partitions, and the embedded warehouse replaces a day by deleting and inserting its rows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import sqlglot
from sqlglot import exp

from textclf.warehouse.base import WarehouseError

READ_DIALECT = "bigquery"
WRITE_DIALECT = "duckdb"

# DuckDB type of each Python parameter type, in the BigQuery type it stands for. ``bool`` comes first
# because it is a subclass of ``int``; ``datetime`` before ``date`` for the same reason.
_PARAMETER_TYPES: tuple[tuple[type, str], ...] = (
    (bool, "BOOLEAN"),
    (int, "BIGINT"),
    (float, "DOUBLE"),
    (str, "VARCHAR"),
    (bytes, "BLOB"),
    (dt.datetime, "TIMESTAMP"),
    (dt.date, "DATE"),
)

# ``OPTIONS(key=value)`` parses as plain ``Property`` nodes.
_DROPPED_PROPERTIES = (exp.PartitionedByProperty, exp.ClusterProperty, exp.Property)


def parse_bigquery(sql: str) -> list[exp.Expression]:
    """Parse a BigQuery statement or script into one AST per statement.

    :param sql: BigQuery SQL, possibly several statements separated by ``;``.
    """
    try:
        statements = sqlglot.parse(sql, read=READ_DIALECT)
    except sqlglot.errors.ParseError as error:
        raise WarehouseError(f"Invalid BigQuery SQL: {error}. Fix the statement; the SQL was:\n{sql}") from None
    return [statement for statement in statements if statement is not None]


def referenced_parameters(statement: exp.Expression) -> list[str]:
    """Return the names of the ``@name`` parameters a statement uses, in order of first use."""
    names: list[str] = []
    for parameter in statement.find_all(exp.Parameter):
        name = parameter.name
        if name and name not in names:
            names.append(name)
    return names


def bind_parameters(statement: exp.Expression, parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check that every parameter of ``statement`` has a value and return the values it uses.

    :param statement: a parsed BigQuery statement.
    :param parameters: the values the caller passed, by name.
    """
    parameters = parameters or {}
    missing = [name for name in referenced_parameters(statement) if name not in parameters]
    if missing:
        raise WarehouseError(
            f"Query parameter(s) {', '.join('@' + name for name in missing)} used in the SQL but not given: "
            f"pass a value for each in `parameters` (given: {sorted(parameters) or 'none'})."
        )
    return {name: parameters[name] for name in referenced_parameters(statement)}


def to_duckdb(statement: exp.Expression, parameters: Mapping[str, Any] | None = None) -> str:
    """Translate one parsed BigQuery statement into DuckDB SQL.

    :param statement: a parsed BigQuery statement; it is not modified.
    :param parameters: the bound values, used to type each ``$name`` placeholder.
    """
    statement = statement.copy()
    statement = statement.transform(_map_table_name)
    statement = statement.transform(lambda node: _cast_parameter(node, parameters or {}))
    statement = statement.transform(_keep_date_arithmetic_a_date)
    statement = statement.transform(_slice_limited_array_agg)
    statement = statement.transform(_count_if_as_int64)
    statement = statement.transform(_trim_whitespace)
    for node in list(statement.find_all(*_DROPPED_PROPERTIES)):
        if type(node) in _DROPPED_PROPERTIES:
            node.pop()
    return statement.sql(dialect=WRITE_DIALECT)


def table_path(table: exp.Table) -> tuple[str | None, str]:
    """Return the DuckDB (schema, table) of a BigQuery table node, dropping its project."""
    return (table.db or None, table.name)


def _map_table_name(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.Table) and node.args.get("catalog") is not None and isinstance(node.this, exp.Identifier):
        node = node.copy()
        node.set("catalog", None)
    return node


def _cast_parameter(node: exp.Expression, parameters: Mapping[str, Any]) -> exp.Expression:
    if not isinstance(node, exp.Parameter) or node.name not in parameters:
        return node
    placeholder = exp.Placeholder(this=node.name, prefix="$")
    duckdb_type = parameter_type(parameters[node.name])
    if duckdb_type is None:
        return placeholder
    return exp.cast(placeholder, exp.DataType.build(duckdb_type, dialect=WRITE_DIALECT))


def parameter_type(value: Any) -> str | None:
    """Return the DuckDB type that a Python parameter value binds as, or None to let DuckDB infer it."""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return "TIMESTAMPTZ"
    for python_type, duckdb_type in _PARAMETER_TYPES:
        if isinstance(value, python_type):
            return duckdb_type
    return None


def _keep_date_arithmetic_a_date(node: exp.Expression) -> exp.Expression:
    # BigQuery's DATE_ADD/DATE_SUB take and return a DATE; TIMESTAMP_ADD and DATETIME_ADD are other nodes.
    if isinstance(node, (exp.DateAdd, exp.DateSub)) and not isinstance(node.parent, exp.Cast):
        return exp.cast(node.copy(), exp.DataType.build("DATE"))
    return node


def _slice_limited_array_agg(node: exp.Expression) -> exp.Expression:
    # sqlglot parses ``ARRAY_AGG(x ORDER BY y LIMIT n)`` as ArrayAgg(Limit(Order(x, y), n)).
    if not isinstance(node, exp.ArrayAgg) or not isinstance(node.this, exp.Limit):
        return node
    count = node.this.expression
    aggregate = exp.ArrayAgg(this=node.this.this.copy())
    # DuckDB lists are 1-based and slices include their upper bound: [1:n] keeps the first n elements.
    return exp.Bracket(this=aggregate, expressions=[exp.Slice(this=exp.Literal.number(1), expression=count.copy())])


def _count_if_as_int64(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.CountIf) and not isinstance(node.parent, exp.Cast):
        return exp.cast(node.copy(), exp.DataType.build("BIGINT"))
    return node


# Whitespace in RE2, the regular expression engine of DuckDB: ASCII \s plus Unicode separators.
_EDGE_WHITESPACE = r"^[\s\p{Z}]+|[\s\p{Z}]+$"


def _trim_whitespace(node: exp.Expression) -> exp.Expression:
    if not isinstance(node, exp.Trim) or node.args.get("expression") is not None or node.args.get("position"):
        return node
    return exp.Anonymous(
        this="regexp_replace",
        expressions=[node.this.copy(), exp.Literal.string(_EDGE_WHITESPACE), exp.Literal.string(""), exp.Literal.string("g")],
    )
