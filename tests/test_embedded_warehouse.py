"""Tests of the embedded DuckDB warehouse, on real DuckDB files and a real SavedModel."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from savedmodel_fixtures import export_text_classifier
from textclf.identifiers import TableRef
from textclf.warehouse.base import WarehouseError
from textclf.warehouse.embedded import EmbeddedWarehouse

DAY_A = dt.date(2014, 12, 1)
DAY_B = dt.date(2014, 12, 2)
SOURCE = TableRef("test-project", "reviews", "source")
RESULTS = TableRef("test-project", "results", "daily")
MODEL = TableRef("test-project", "results", "classifier")
TEXTS = ["좋은 영화였다", "bad movie", "great 👍🎬", "", None, "가" * 1000, "  ", "최악 ㅠㅠ"]
PLUGINS_DIR = Path(__file__).resolve().parents[1] / "plugins"


@pytest.fixture(scope="module")
def saved_model_dir(tmp_path_factory):
    return export_text_classifier(tmp_path_factory.mktemp("model") / "saved_model")


@pytest.fixture(scope="module")
def serving_fn(saved_model_dir):
    import tensorflow as tf

    return tf.saved_model.load(str(saved_model_dir)).signatures["serving_default"]


@pytest.fixture
def warehouse(tmp_path):
    return EmbeddedWarehouse(tmp_path / "warehouse.duckdb", lock_timeout_seconds=60)


@pytest.fixture
def model_warehouse(warehouse, saved_model_dir):
    rows = 20_000
    texts = [TEXTS[i % len(TEXTS)] for i in range(rows)]
    data = pa.table({"review_id": pa.array(range(rows), pa.int64()), "text": texts, "review_date": [DAY_A] * rows})
    warehouse.load_partitions(data, table=SOURCE, partition_column="review_date")
    warehouse.create_model(MODEL, str(saved_model_dir))
    return warehouse


def day_rows(warehouse, day):
    return warehouse.query(
        f"SELECT id FROM {RESULTS.sql} WHERE run_date = @day ORDER BY id", {"day": day}
    ).column("id").to_pylist()


def write_day(warehouse, day, ids):
    return warehouse.write_partition(
        "SELECT @day AS run_date, id FROM UNNEST(@ids) AS id",
        {"day": day, "ids": ids},
        table=RESULTS,
        partition_column="run_date",
        partition_date=day,
    )


def test_rewrite_replaces_only_its_partition(warehouse):
    assert write_day(warehouse, DAY_A, [1, 2, 3]) == 3
    assert write_day(warehouse, DAY_B, [10, 11]) == 2
    assert write_day(warehouse, DAY_A, [4]) == 1
    assert day_rows(warehouse, DAY_A) == [4]
    assert day_rows(warehouse, DAY_B) == [10, 11]


def test_rows_of_another_day_are_rejected(warehouse):
    write_day(warehouse, DAY_A, [1, 2])
    with pytest.raises(WarehouseError, match=r"results\.daily.*1 of 2 rows have run_date"):
        warehouse.write_partition(
            "SELECT IF(id = 1, @day, @other) AS run_date, id FROM UNNEST([1, 2]) AS id",
            {"day": DAY_A, "other": DAY_B},
            table=RESULTS,
            partition_column="run_date",
            partition_date=DAY_A,
        )
    assert day_rows(warehouse, DAY_A) == [1, 2]
    assert day_rows(warehouse, DAY_B) == []


def test_partition_column_must_be_date(warehouse):
    with pytest.raises(WarehouseError, match="partition column 'run_date'.*expected DATE"):
        warehouse.write_partition(
            "SELECT 'x' AS run_date", None, table=RESULTS, partition_column="run_date", partition_date=DAY_A
        )
    assert not warehouse.table_exists(RESULTS)


def test_parameter_types(warehouse):
    result = warehouse.query(
        "SELECT @d AS d, @s AS s, @i AS i, @f AS f, @b AS b, DATE_SUB(@d, INTERVAL 7 DAY) AS week_before",
        {"d": DAY_A, "s": "텍스트 👍", "i": 2**40, "f": 0.25, "b": True},
    )
    row = result.to_pylist()[0]
    assert row["d"] == DAY_A
    assert row["s"] == "텍스트 👍"
    assert row["i"] == 2**40
    assert row["f"] == 0.25
    assert row["b"] is True
    assert row["week_before"] == dt.date(2014, 11, 24)
    assert result.schema.field("i").type == pa.int64()
    assert result.schema.field("week_before").type == pa.date32()


def test_missing_parameter_is_named(warehouse):
    with pytest.raises(WarehouseError, match="@run_date"):
        warehouse.query("SELECT @run_date AS d, @other AS o", {"other": 1})


def test_bigquery_constructs_translate(warehouse):
    warehouse.load_partitions(
        pa.table(
            {
                "id": [1, 2, 3, 4],
                "label": ["a", "b", "a", None],
                "score": [0.5, 1.5, 2.5, 3.5],
                "review_date": [DAY_A] * 4,
            }
        ),
        table=SOURCE,
        partition_column="review_date",
    )
    row = warehouse.query(
        f"""
        SELECT
          COUNTIF(label = 'a') AS a_count,
          SAFE_DIVIDE(SUM(score), 0) AS safe_division,
          SAFE_DIVIDE(SUM(score), COUNT(*)) AS mean_score,
          IF(COUNT(*) > 3, 'many', 'few') AS size,
          ARRAY_AGG(id ORDER BY score DESC LIMIT 2) AS top_ids,
          STRUCT(MIN(id) AS low, MAX(id) AS high) AS id_range,
          CURRENT_TIMESTAMP() IS NOT NULL AS has_now,
          LENGTH(TRIM('  한국어 ')) AS trimmed_length,
          COALESCE(MAX(IF(label IS NULL, NULL, label)), 'none') AS max_label,
          CAST('2.5' AS FLOAT64) AS as_float,
          CAST(2.0 AS INT64) AS as_int,
          CAST(7 AS STRING) AS as_string,
          ARRAY_LENGTH(GENERATE_DATE_ARRAY(DATE_SUB(@day, INTERVAL 6 DAY), @day)) AS week_days,
          (SELECT SUM(x) FROM UNNEST([1, 2, 3]) AS x) AS unnest_sum
        FROM {SOURCE.sql}
        """,
        {"day": DAY_A},
    ).to_pylist()[0]
    assert row["a_count"] == 2
    assert row["safe_division"] is None
    assert row["mean_score"] == 2.0
    assert row["size"] == "many"
    assert row["top_ids"] == [4, 3]
    assert row["id_range"] == {"low": 1, "high": 4}
    assert row["has_now"] is True
    assert row["trimmed_length"] == 3
    assert row["max_label"] == "b"
    assert row["as_float"] == 2.5
    assert row["as_int"] == 2
    assert row["as_string"] == "7"
    assert row["week_days"] == 7
    assert row["unnest_sum"] == 6


def test_select_except_and_generated_dates(warehouse):
    rows = warehouse.query(
        "SELECT * EXCEPT(drop_me) FROM (SELECT d, 1 AS drop_me FROM UNNEST(GENERATE_DATE_ARRAY(@a, @b)) AS d) ORDER BY d",
        {"a": DAY_A, "b": DAY_B},
    )
    assert rows.column_names == ["d"]
    assert rows.column("d").to_pylist() == [DAY_A, DAY_B]


def test_ml_predict_matches_model(model_warehouse, serving_fn):
    import tensorflow as tf

    result = model_warehouse.query(
        f"""SELECT review_id, text, predicted_label, predicted_probability, class_probabilities, @tag AS tag
        FROM ML.PREDICT(MODEL {MODEL.sql}, (SELECT review_id, text FROM {SOURCE.sql} WHERE review_date = @day))
        ORDER BY review_id""",
        {"day": DAY_A, "tag": "run"},
    )
    texts = result.column("text").to_pylist()
    expected = serving_fn(text=tf.constant([text if text is not None else "" for text in texts]))
    assert result.num_rows == 20_000
    assert result.column("review_id").to_pylist() == list(range(20_000))
    assert texts[:8] == TEXTS
    assert set(result.column("tag").to_pylist()) == {"run"}
    assert result.column("predicted_label").to_pylist() == [v.decode() for v in expected["predicted_label"].numpy()]
    probabilities = result.column("predicted_probability").to_numpy()
    assert np.max(np.abs(probabilities - expected["predicted_probability"].numpy())) <= 1e-6
    class_probabilities = np.array(result.column("class_probabilities").to_pylist())
    assert class_probabilities.shape == (20_000, 2)
    assert np.max(np.abs(class_probabilities - expected["class_probabilities"].numpy())) <= 1e-6


def test_ml_predict_table_into_partition(model_warehouse):
    rows = model_warehouse.write_partition(
        f"SELECT @day AS run_date, p.* EXCEPT(review_date) FROM ML.PREDICT(MODEL {MODEL.sql}, TABLE {SOURCE.sql}) AS p",
        {"day": DAY_B},
        table=RESULTS,
        partition_column="run_date",
        partition_date=DAY_B,
    )
    summary = model_warehouse.query(
        f"SELECT COUNT(*) AS n, COUNTIF(text IS NULL) AS null_texts, MIN(predicted_probability) AS p FROM {RESULTS.sql}"
    ).to_pylist()[0]
    assert rows == 20_000
    assert summary["n"] == 20_000
    assert summary["null_texts"] == 2_500
    assert summary["p"] >= 0.5


def test_ml_predict_streams_in_batches(tmp_path, saved_model_dir, caplog):
    warehouse = EmbeddedWarehouse(tmp_path / "small_batches.duckdb", predict_batch_size=1000)
    warehouse.create_model(MODEL, f"file://{saved_model_dir}/*")
    caplog.set_level("INFO", logger="textclf.warehouse.ml_predict")
    result = warehouse.query(
        f"SELECT COUNT(*) AS n FROM ML.PREDICT(MODEL {MODEL.sql}, (SELECT 'x' AS text FROM UNNEST(GENERATE_ARRAY(1, 5500))))"
    )
    assert result.column("n").to_pylist() == [5500]
    assert any("5500 rows in 6 batches" in message for message in caplog.messages)


def test_unknown_model(warehouse):
    with pytest.raises(WarehouseError, match=r"Model `test-project\.results\.nothing` not found: create it with CREATE MODEL"):
        warehouse.query("SELECT * FROM ML.PREDICT(MODEL `test-project.results.nothing`, (SELECT 'x' AS text))")


def test_missing_input_column(model_warehouse):
    with pytest.raises(WarehouseError, match=r"classifier.*no column 'text'.*STRING"):
        model_warehouse.query(f"SELECT * FROM ML.PREDICT(MODEL {MODEL.sql}, (SELECT 'x' AS body))")


def test_wrong_input_column_type(model_warehouse):
    with pytest.raises(WarehouseError, match=r"classifier.*column 'text' has type int64.*expects STRING"):
        model_warehouse.query(f"SELECT * FROM ML.PREDICT(MODEL {MODEL.sql}, (SELECT CAST(1 AS INT64) AS text))")


def test_create_model_without_saved_model(warehouse, tmp_path):
    with pytest.raises(WarehouseError, match="No SavedModel at .*empty"):
        warehouse.execute(
            f"CREATE MODEL {MODEL.sql} OPTIONS(model_type='TENSORFLOW', model_path='{tmp_path / 'empty'}')"
        )


def test_create_model_statement_rules(warehouse, saved_model_dir):
    statement = f"CREATE MODEL {MODEL.sql} OPTIONS(model_type='TENSORFLOW', model_path='{saved_model_dir}/*')"
    warehouse.execute(statement)
    with pytest.raises(WarehouseError, match="already exists. Use CREATE OR REPLACE MODEL"):
        warehouse.execute(statement)
    warehouse.execute(statement.replace("CREATE MODEL", "CREATE OR REPLACE MODEL"))
    with pytest.raises(WarehouseError, match="model_type='LOGISTIC_REG' is not supported by the embedded warehouse"):
        warehouse.execute(f"CREATE OR REPLACE MODEL {MODEL.sql} OPTIONS(model_type='LOGISTIC_REG')")


def test_load_partitions_rejects_wrong_type(warehouse):
    warehouse.load_partitions(pa.table({"n": [1], "review_date": [DAY_A]}), table=SOURCE, partition_column="review_date")
    with pytest.raises(WarehouseError, match="column 'n' has type VARCHAR in the data but BIGINT in the table"):
        warehouse.load_partitions(pa.table({"n": ["x"], "review_date": [DAY_B]}), table=SOURCE, partition_column="review_date")
    assert warehouse.query(f"SELECT COUNT(*) AS n FROM {SOURCE.sql}").column("n").to_pylist() == [1]


def test_script_of_statements(warehouse):
    warehouse.execute(
        "CREATE TABLE `test-project.scratch.t` (id INT64, d DATE) PARTITION BY d; "
        "INSERT INTO `test-project.scratch.t` VALUES (1, @day), (2, @day)",
        {"day": DAY_A},
    )
    assert warehouse.table_exists(TableRef("test-project", "scratch", "t"))
    assert warehouse.query("SELECT SUM(id) AS s FROM `test-project.scratch.t`").column("s").to_pylist() == [3]


WRITER_SCRIPT = textwrap.dedent(
    """
    import datetime as dt, sys
    from textclf.identifiers import TableRef
    from textclf.warehouse.embedded import EmbeddedWarehouse

    warehouse = EmbeddedWarehouse(sys.argv[1], lock_timeout_seconds=60)
    day = dt.date.fromisoformat(sys.argv[2])
    for _ in range(int(sys.argv[3])):
        warehouse.write_partition(
            "SELECT @day AS run_date, id FROM UNNEST(GENERATE_ARRAY(1, 50000)) AS id",
            {"day": day},
            table=TableRef("test-project", "results", "daily"),
            partition_column="run_date",
            partition_date=day,
        )
    """
)


@pytest.mark.parametrize("days", [(DAY_A, DAY_B), (DAY_A, DAY_A)], ids=["different_days", "same_day"])
def test_two_processes_write_at_once(tmp_path, days):
    database = tmp_path / "shared.duckdb"
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, str(database), day.isoformat(), "5"], stderr=subprocess.PIPE)
        for day in days
    ]
    errors = [writer.communicate(timeout=120)[1].decode() for writer in writers]
    assert [writer.returncode for writer in writers] == [0, 0], errors
    counts = EmbeddedWarehouse(database).query(
        f"SELECT run_date, COUNT(*) AS n, COUNT(DISTINCT id) AS ids FROM {RESULTS.sql} GROUP BY run_date ORDER BY run_date"
    )
    assert counts.column("run_date").to_pylist() == sorted(set(days))
    assert counts.column("n").to_pylist() == [50000] * len(set(days))
    assert counts.column("ids").to_pylist() == [50000] * len(set(days))


KILLED_WRITER_SCRIPT = textwrap.dedent(
    """
    import datetime as dt, sys, time
    import duckdb
    from textclf.identifiers import TableRef
    from textclf.warehouse.embedded import EmbeddedWarehouse

    connect = duckdb.connect

    def connect_with_marker(*args, **kwargs):
        connection = connect(*args, **kwargs)

        def mark_row(i):
            if i == 30000:
                print("writing", flush=True)
                time.sleep(60)
            return i

        connection.create_function("mark_row", mark_row, ["BIGINT"], "BIGINT")
        return connection

    duckdb.connect = connect_with_marker
    day = dt.date.fromisoformat(sys.argv[2])
    EmbeddedWarehouse(sys.argv[1]).write_partition(
        "SELECT @day AS run_date, mark_row(id) AS id FROM UNNEST(GENERATE_ARRAY(1, 50000)) AS id",
        {"day": day},
        table=TableRef("test-project", "results", "daily"),
        partition_column="run_date",
        partition_date=day,
    )
    """
)


def test_killed_write_keeps_previous_partition(tmp_path):
    database = tmp_path / "killed.duckdb"
    warehouse = EmbeddedWarehouse(database)
    write_day(warehouse, DAY_A, [1, 2, 3])
    writer = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER_SCRIPT, str(database), DAY_A.isoformat()], stdout=subprocess.PIPE
    )
    assert writer.stdout.readline().decode().strip() == "writing"
    writer.kill()
    writer.wait(timeout=30)
    assert day_rows(warehouse, DAY_A) == [1, 2, 3]


def test_lock_timeout_names_lock_file(tmp_path):
    import fcntl

    database = tmp_path / "locked.duckdb"
    warehouse = EmbeddedWarehouse(database, lock_timeout_seconds=0.3)
    with open(warehouse.lock_path, "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        with pytest.raises(WarehouseError, match=r"Timed out after 0 s waiting for the lock file .*locked\.duckdb\.lock"):
            warehouse.query("SELECT 1 AS x")


def test_table_columns_in_bigquery_types(warehouse):
    table = TableRef("test-project", "scratch", "typed")
    warehouse.execute(
        "CREATE TABLE `test-project.scratch.typed` "
        "(id INT64, text STRING, score FLOAT64, ok BOOL, day DATE, at TIMESTAMP, tags ARRAY<STRING>)"
    )

    columns = warehouse.table_columns(table)

    assert columns == {
        "id": "INT64",
        "text": "STRING",
        "score": "FLOAT64",
        "ok": "BOOL",
        "day": "DATE",
        "at": "TIMESTAMP",
        "tags": "ARRAY<STRING>",
    }
    assert warehouse.table_columns(TableRef("test-project", "scratch", "missing")) is None


def test_trim_removes_all_whitespace(warehouse):
    rows = warehouse.query(
        "SELECT TRIM(x) AS trimmed FROM UNNEST(['\\t\\n ', ' a b ', '\\u3000안녕\\u00a0']) AS x WITH OFFSET AS i ORDER BY i"
    ).to_pylist()

    assert [row["trimmed"] for row in rows] == ["", "a b", "안녕"]


def test_connection_extra_sets_predict_batch_size(tmp_path, monkeypatch):
    import json

    from textclf.warehouse import get_warehouse

    connection = {"conn_type": "duckdb", "host": str(tmp_path / "w.duckdb"), "extra": {"predict_batch_size": 512}}
    monkeypatch.setenv("AIRFLOW_CONN_TEXTCLF_WAREHOUSE", json.dumps(connection))

    warehouse = get_warehouse("textclf_warehouse")

    assert isinstance(warehouse, EmbeddedWarehouse)
    assert warehouse.predict_batch_size == 512
    assert str(warehouse.database_path) == str(tmp_path / "w.duckdb")
