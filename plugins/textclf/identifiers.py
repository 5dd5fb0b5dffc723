"""Validation of BigQuery identifiers that Jinja places into SQL.

Only names pass through Jinja; every value travels as a query parameter. A name that reaches a
template from configuration or from a trigger-form param is checked here first, so quotes,
backticks, semicolons and comments can never change the statement that runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Project ids: 6-30 characters, lowercase letters, digits and hyphens, starting with a letter.
# Legacy domain-scoped ids ("example.com:project") are accepted as well.
_PROJECT_RE = re.compile(r"^(?:[a-z][a-z0-9.-]{0,62}:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$")
# Dataset names: letters, digits and underscores, at most 1,024 characters.
_DATASET_RE = re.compile(r"^[A-Za-z0-9_]{1,1024}$")
# Table and model names: BigQuery allows more Unicode categories, but this project keeps to the
# portable subset that both BigQuery and DuckDB accept unquoted: letters, digits, underscores.
_TABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,1023}$")
# Column names: letters, digits and underscores, starting with a letter or underscore, at most
# 300 characters, and not one of the prefixes BigQuery reserves.
_COLUMN_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,299}$")
_RESERVED_COLUMN_PREFIXES = ("_table_", "_file_", "_partition", "_row_timestamp", "__root__", "_colidentifier")


class InvalidIdentifierError(ValueError):
    """Raised when a name is not a valid BigQuery identifier of its kind."""


def validate_project(value: str, *, what: str = "project") -> str:
    """Return ``value`` if it is a valid Google Cloud project id, else raise ``InvalidIdentifierError``."""
    return _check(value, _PROJECT_RE, what, "6-30 lowercase letters, digits or hyphens, starting with a letter")


def validate_dataset(value: str, *, what: str = "dataset") -> str:
    """Return ``value`` if it is a valid BigQuery dataset name, else raise ``InvalidIdentifierError``."""
    return _check(value, _DATASET_RE, what, "letters, digits and underscores")


def validate_table(value: str, *, what: str = "table") -> str:
    """Return ``value`` if it is a valid table or model name, else raise ``InvalidIdentifierError``."""
    return _check(value, _TABLE_RE, what, "letters, digits and underscores, not starting with a digit")


def validate_column(value: str, *, what: str = "column") -> str:
    """Return ``value`` if it is a valid BigQuery column name, else raise ``InvalidIdentifierError``."""
    _check(value, _COLUMN_RE, what, "letters, digits and underscores, not starting with a digit, at most 300")
    if value.lower().startswith(_RESERVED_COLUMN_PREFIXES):
        raise InvalidIdentifierError(
            f"Invalid {what} {value!r}: BigQuery reserves column names starting with "
            f"{', '.join(_RESERVED_COLUMN_PREFIXES)}. Rename the column."
        )
    return value


def _check(value: object, pattern: re.Pattern[str], what: str, allowed: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidIdentifierError(f"Invalid {what} {value!r}: expected {allowed}.")
    return value


@dataclass(frozen=True)
class TableRef:
    """A fully qualified BigQuery table or model name, validated on construction."""

    project: str
    dataset: str
    table: str

    def __post_init__(self) -> None:
        validate_project(self.project)
        validate_dataset(self.dataset)
        validate_table(self.table)

    @classmethod
    def parse(cls, value: str, *, default_project: str | None = None, default_dataset: str | None = None) -> TableRef:
        """Parse ``project.dataset.table``, ``dataset.table`` or ``table``, filling in the defaults."""
        if not isinstance(value, str):
            raise InvalidIdentifierError(f"Invalid table name {value!r}: expected a string such as 'dataset.table'.")
        parts = value.strip("`").split(".")
        if len(parts) == 3:
            return cls(*parts)
        if len(parts) == 2 and default_project:
            return cls(default_project, parts[0], parts[1])
        if len(parts) == 1 and default_project and default_dataset:
            return cls(default_project, default_dataset, parts[0])
        raise InvalidIdentifierError(
            f"Invalid table name {value!r}: expected 'project.dataset.table'"
            + (" or 'dataset.table'" if default_project else "")
            + "."
        )

    def with_table(self, table: str) -> TableRef:
        """Return the name of another table in the same dataset."""
        return TableRef(self.project, self.dataset, table)

    @property
    def sql(self) -> str:
        """The back-quoted name as it appears in BigQuery SQL."""
        return f"`{self.project}.{self.dataset}.{self.table}`"

    def __str__(self) -> str:
        return f"{self.project}.{self.dataset}.{self.table}"
