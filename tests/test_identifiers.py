"""BigQuery identifier validation."""

from __future__ import annotations

import pytest

from textclf.identifiers import (
    InvalidIdentifierError,
    TableRef,
    validate_column,
    validate_dataset,
    validate_project,
    validate_table,
)

INJECTIONS = ["a`b", "a'b", 'a"b', "a;b", "a--b", "a/*b*/", "a b", "a\nb", "a.b", "", "테이블"]


@pytest.mark.parametrize("value", INJECTIONS)
def test_table_rejects_injection(value):
    with pytest.raises(InvalidIdentifierError, match="Invalid table"):
        validate_table(value)


@pytest.mark.parametrize("value", INJECTIONS)
def test_column_rejects_injection(value):
    with pytest.raises(InvalidIdentifierError, match="Invalid column"):
        validate_column(value)


@pytest.mark.parametrize("value", INJECTIONS)
def test_dataset_rejects_injection(value):
    with pytest.raises(InvalidIdentifierError, match="Invalid dataset"):
        validate_dataset(value)


@pytest.mark.parametrize("value", ["my-project", "textclf-local", "example.com:my-project"])
def test_project_accepts_valid_ids(value):
    assert validate_project(value) == value


@pytest.mark.parametrize("value", ["My-Project", "abc", "1project", "my_project", "p`; --"])
def test_project_rejects_invalid_ids(value):
    with pytest.raises(InvalidIdentifierError, match="Invalid project"):
        validate_project(value)


@pytest.mark.parametrize("value", ["_PARTITIONTIME", "_table_suffix", "_FILE_NAME"])
def test_column_rejects_reserved_prefixes(value):
    with pytest.raises(InvalidIdentifierError, match="reserves"):
        validate_column(value)


def test_column_rejects_over_300_characters():
    assert validate_column("c" * 300) == "c" * 300
    with pytest.raises(InvalidIdentifierError):
        validate_column("c" * 301)


def test_table_ref_parses_short_forms():
    assert TableRef.parse("p-roject.d.t") == TableRef("p-roject", "d", "t")
    assert TableRef.parse("d.t", default_project="my-project") == TableRef("my-project", "d", "t")
    assert TableRef.parse("t", default_project="my-project", default_dataset="d") == TableRef("my-project", "d", "t")
    assert TableRef.parse("`my-project.d.t`") == TableRef("my-project", "d", "t")


def test_table_ref_quotes_for_bigquery():
    assert TableRef("my-project", "d", "t").sql == "`my-project.d.t`"
    assert str(TableRef("my-project", "d", "t")) == "my-project.d.t"


def test_table_ref_rejects_four_parts():
    with pytest.raises(InvalidIdentifierError, match="expected 'project.dataset.table'"):
        TableRef.parse("a.b.c.d", default_project="my-project")
