"""Conversion of Python values into typed BigQuery query parameters.

Shared by the warehouse and the training job that runs on Vertex AI, so it imports nothing from
Airflow and loads the BigQuery client only when called.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from google.cloud import bigquery


def scalar_type(value: object, *, name: str) -> str:
    """Return the BigQuery type of a Python value: BOOL, INT64, FLOAT64, STRING, DATE or TIMESTAMP.

    :param value: the parameter value.
    :param name: the parameter name, used in the error message.
    """
    # bool is a subclass of int and datetime of date, so the narrower types are tested first.
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, int):
        return "INT64"
    if isinstance(value, float):
        return "FLOAT64"
    if isinstance(value, str):
        return "STRING"
    if isinstance(value, dt.datetime):
        return "TIMESTAMP"
    if isinstance(value, dt.date):
        return "DATE"
    if value is None:
        raise ValueError(
            f"Query parameter `{name}` is None: BigQuery needs a type for every parameter. "
            f"Pass a value, or write NULL in the SQL instead of @{name}."
        )
    raise ValueError(
        f"Query parameter `{name}` has unsupported type {type(value).__name__}: expected str, int, float, "
        f"bool, datetime.date, datetime.datetime or a list of one of those, got {value!r}."
    )


def to_query_parameters(
    parameters: Mapping[str, Any] | None,
) -> list[bigquery.ScalarQueryParameter | bigquery.ArrayQueryParameter]:
    """Convert a mapping of names to Python values into typed BigQuery query parameters.

    Lists and tuples become ``ArrayQueryParameter`` values; their elements must share one type and
    the list must not be empty, because BigQuery cannot type an empty array parameter.

    :param parameters: parameter names mapped to values; None means no parameters.
    """
    from google.cloud import bigquery

    query_parameters: list[bigquery.ScalarQueryParameter | bigquery.ArrayQueryParameter] = []
    for name, value in (parameters or {}).items():
        if isinstance(value, (list, tuple)):
            query_parameters.append(bigquery.ArrayQueryParameter(name, _array_element_type(value, name=name), list(value)))
        else:
            query_parameters.append(bigquery.ScalarQueryParameter(name, scalar_type(value, name=name), value))
    return query_parameters


def _array_element_type(values: list[Any] | tuple[Any, ...], *, name: str) -> str:
    if not values:
        raise ValueError(
            f"Query parameter `{name}` is an empty list: BigQuery cannot type an empty array parameter. "
            f"Skip the filter in the SQL when the list is empty."
        )
    element_types = {scalar_type(value, name=name) for value in values}
    if len(element_types) > 1:
        raise ValueError(
            f"Query parameter `{name}` mixes element types {sorted(element_types)}: an array parameter "
            f"needs one element type."
        )
    return element_types.pop()
