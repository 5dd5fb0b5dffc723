"""Tests of the ``load`` command on every file format, against a real embedded warehouse."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from textclf.identifiers import TableRef
from textclf.loader import LoadError, load_file
from textclf.warehouse.embedded import EmbeddedWarehouse

TABLE = TableRef("test-project", "reviews", "source")
NSMC = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "nsmc" / "reviews_2003_2014.parquet"
TEXTS = ["좋은 영화", "", "emoji 👍🎬", "가" * 10_000]


@pytest.fixture
def warehouse(tmp_path):
    return EmbeddedWarehouse(tmp_path / "warehouse.duckdb")


def table_rows(warehouse):
    return warehouse.query(f"SELECT * FROM {TABLE.sql} ORDER BY review_id").to_pylist()


def test_parquet_replaces_each_day(warehouse, tmp_path):
    path = tmp_path / "reviews.parquet"
    pq.write_table(
        pa.table({"review_id": [1, 2, 3], "text": ["a", None, "c"], "review_date": ["2014-12-01", "2014-12-01", "2014-12-02"]}),
        path,
    )
    assert load_file(path, warehouse=warehouse, table=TABLE, partition_column="review_date") == {
        dt.date(2014, 12, 1): 2,
        dt.date(2014, 12, 2): 1,
    }
    pq.write_table(pa.table({"review_id": [9], "text": ["z"], "review_date": [dt.date(2014, 12, 1)]}), path)
    load_file(path, warehouse=warehouse, table=TABLE, partition_column="review_date")
    assert [row["review_id"] for row in table_rows(warehouse)] == [3, 9]


@pytest.mark.parametrize("suffix,delimiter", [(".csv", ","), (".tsv", "\t")])
def test_delimited_keeps_unicode(warehouse, tmp_path, suffix, delimiter):
    path = tmp_path / f"reviews{suffix}"
    lines = [delimiter.join(["review_id", "text", "review_date"])]
    lines += [delimiter.join([str(i), text, "2014-12-01"]) for i, text in enumerate(TEXTS)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert load_file(path, warehouse=warehouse, table=TABLE, partition_column="review_date") == {dt.date(2014, 12, 1): 4}
    assert [row["text"] for row in table_rows(warehouse)] == TEXTS


def test_request_json_lines(warehouse, tmp_path):
    path = tmp_path / "requests.jsonl"
    records = [
        {"data": ["좋아 👍"], "pid": 1, "logkey": "a", "review_date": "2014-12-01"},
        {"data": [None], "pid": 2, "logkey": "b", "review_date": "2014-12-01"},
        {"data": ["x" * 10_000], "pid": 3, "logkey": "c", "review_date": "2014-12-02"},
    ]
    path.write_text("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records), encoding="utf-8")
    load_file(path, warehouse=warehouse, table=TABLE, partition_column="review_date")
    rows = warehouse.query(f"SELECT pid, logkey, text, review_date FROM {TABLE.sql} ORDER BY pid").to_pylist()
    assert [row["text"] for row in rows] == ["좋아 👍", None, "x" * 10_000]
    assert [row["logkey"] for row in rows] == ["a", "b", "c"]
    assert rows[2]["review_date"] == dt.date(2014, 12, 2)


def write_broken_json_lines(path):
    lines = [json.dumps({"data": [f"text {i}"], "pid": i, "review_date": "2014-12-01"}) for i in range(5)]
    lines[1] = '{"data": ["cut'
    lines[3] = json.dumps({"data": ["bad day"], "pid": 3, "review_date": "yesterday"})
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_broken_lines_fail_by_default(warehouse, tmp_path):
    path = tmp_path / "broken.jsonl"
    write_broken_json_lines(path)
    with pytest.raises(LoadError, match=r"2 malformed line\(s\) in .*broken\.jsonl: lines 2, 4\..*'yesterday'"):
        load_file(path, warehouse=warehouse, table=TABLE, partition_column="review_date")
    assert not warehouse.table_exists(TABLE)


def test_max_bad_lines_loads_the_rest(warehouse, tmp_path, caplog):
    path = tmp_path / "broken.jsonl"
    write_broken_json_lines(path)
    assert load_file(path, warehouse=warehouse, table=TABLE, partition_column="review_date", max_bad_lines=2) == {
        dt.date(2014, 12, 1): 3
    }
    assert any("lines 2, 4" in message for message in caplog.messages)


def test_invalid_utf8_names_line(warehouse, tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("review_id,text,review_date\n1,ok,2014-12-01\n2,caf\xe9,2014-12-01\n".encode("latin-1"))
    with pytest.raises(LoadError, match=r"latin1\.csv is not valid UTF-8: line 3"):
        load_file(path, warehouse=warehouse, table=TABLE, partition_column="review_date")


def test_missing_partition_column_lists_columns(warehouse, tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text("review_id,text,day\n1,a,2014-12-01\n", encoding="utf-8")
    with pytest.raises(LoadError, match="no partition column 'review_date'; the columns found are: review_id, text, day"):
        load_file(path, warehouse=warehouse, table=TABLE, partition_column="review_date")


def test_wrong_column_type_against_table(warehouse, tmp_path):
    first = tmp_path / "first.csv"
    first.write_text("review_id,text,review_date\n1,a,2014-12-01\n", encoding="utf-8")
    load_file(first, warehouse=warehouse, table=TABLE, partition_column="review_date")
    second = tmp_path / "second.csv"
    second.write_text("review_id,text,review_date\nabc,b,2014-12-02\n", encoding="utf-8")
    with pytest.raises(Exception, match="column 'review_id' has type VARCHAR in the data but BIGINT in the table"):
        load_file(second, warehouse=warehouse, table=TABLE, partition_column="review_date")
    assert [row["review_id"] for row in table_rows(warehouse)] == [1]


def test_date_option_loads_one_day(warehouse, tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text("review_id,text,review_date\n1,a,2014-12-01\n2,b,2014-12-02\n", encoding="utf-8")
    assert load_file(
        path, warehouse=warehouse, table=TABLE, partition_column="review_date", date=dt.date(2014, 12, 2)
    ) == {dt.date(2014, 12, 2): 1}
    assert [row["review_id"] for row in table_rows(warehouse)] == [2]


def test_command_line_load(tmp_path, capsys):
    from textclf.cli import main

    path = tmp_path / "reviews.tsv"
    path.write_text("review_id\ttext\treview_date\n1\ta\t2014-12-01\n", encoding="utf-8")
    database = tmp_path / "cli.duckdb"
    status = main(["load", str(path), "--table", str(TABLE), "--partition-column", "review_date", "--database", str(database)])
    assert status == 0
    assert "Loaded 1 rows into test-project.reviews.source" in capsys.readouterr().out
    assert EmbeddedWarehouse(database).table_exists(TABLE)


def test_nsmc_day_loads(warehouse):
    if not NSMC.exists():
        pytest.skip(f"{NSMC} is not available")
    day = dt.date(2014, 12, 1)
    rows = load_file(NSMC, warehouse=warehouse, table=TABLE, partition_column="review_date", date=day)
    expected = pq.read_table(NSMC, filters=[("review_date", "=", day)]).num_rows
    assert rows == {day: expected}
