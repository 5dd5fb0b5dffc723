"""Odd rows are predicted, and bad files, tables, models and names stop with one clear message.

Each failure case also checks that nothing was written: every table of the warehouse is compared,
row by row, before and after.
"""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from test_reliability_reruns import (
    BACKFILL,
    MANUAL,
    RUN_DAYS,
    SCHEDULED,
    pipeline_environment,
    saved_model_dir,  # noqa: F401 - a fixture
    source_rows,
)
from textclf.config import PipelineConfig, load_config
from textclf.identifiers import InvalidIdentifierError, TableRef
from textclf.loader import LoadError, load_file
from textclf.warehouse.base import WarehouseError

ODD_DAY = dt.date(2014, 12, 5)
DUPLICATE_DAY = dt.date(2014, 12, 6)
EMPTY_DAY = dt.date(2014, 12, 9)
ODD_TEXTS = {
    "null": None,
    "empty": "",
    "spaces": "   ",
    "long": "아주 긴 리뷰 long review " * 500,
    "emoji": "🎬🍿👍🏽👨‍👩‍👧",
    "mixed_scripts": "이 영화 is really 面白い です",
    "nul": "before\x00after",
    "control": "bell\x07 escape\x1b delete\x7f tab\t newline\n",
    "zero_width": "zero\u200bwidth\u200djoiner\ufeff",
    "plain": "bad movie",
}
BLANK_KEYS = ("null", "empty", "spaces")
WRONG_SIGNATURE_VERSIONS = {"sentence_input": "20141127", "int_input": "20141128"}
INJECTIONS = ("x; DROP TABLE textclf.predictions", "x' OR '1'='1", "x` --", "x/* */", "x\nDROP TABLE t")


def snapshot(database):
    """Return every row of every table in the DuckDB file, in a stable order."""
    import duckdb

    with duckdb.connect(str(database), read_only=True) as connection:
        tables = connection.execute(
            "SELECT table_schema, table_name FROM information_schema.tables ORDER BY 1, 2"
        ).fetchall()
        return {
            f"{schema}.{name}": sorted(
                connection.sql(f'SELECT * FROM "{schema}"."{name}"').to_arrow_table().to_pylist(), key=repr
            )
            for schema, name in tables
        }


def export_wrong_signature(saved_model_dir, input_spec):
    """Export a SavedModel whose one input has another name or type than the pipeline sends."""
    import tensorflow as tf

    class Classifier(tf.Module):
        @tf.function(input_signature=[input_spec])
        def serve(self, values):
            rows = tf.shape(values)[0]
            return {"predicted_label": tf.fill([rows], "positive"), "predicted_probability": tf.fill([rows], 0.9)}

    classifier = Classifier()
    tf.saved_model.save(classifier, str(saved_model_dir), signatures={"serving_default": classifier.serve})
    return saved_model_dir


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, saved_model_dir):  # noqa: F811 - the imported fixture
    home = tmp_path_factory.mktemp("bad_input")
    with pipeline_environment(home, saved_model_dir, skip_empty_days=False) as pipeline:
        load_bad_input(pipeline, home)
        yield pipeline


def load_bad_input(pipeline, home):
    """Load the odd-text, duplicate-id and integer-text days, publish wrong-signature models, run the good days."""
    import tensorflow as tf

    from textclf.store import METRICS_FILE, SAVED_MODEL_DIR, get_model_store
    from textclf.warehouse import open_embedded

    with open_embedded(str(pipeline.database)) as warehouse:
        warehouse.load_partitions(
            source_rows(ODD_DAY, first_id=5000, texts=list(ODD_TEXTS.values())),
            table=pipeline.config.source,
            partition_column="review_date",
        )
        duplicates = source_rows(DUPLICATE_DAY, first_id=6000)
        # Ids 6000 and 6001 occur three times each, 6002 twice: three ids in eight rows.
        duplicates = duplicates.set_column(
            0, "review_id", pa.array([6000, 6000, 6000, 6001, 6001, 6001, 6002, 6002, *range(6008, 6040)], pa.int64())
        )
        warehouse.load_partitions(duplicates, table=pipeline.config.source, partition_column="review_date")
        int_texts = source_rows(RUN_DAYS[0], first_id=7000).set_column(1, "text", pa.array(range(40), pa.int64()))
        warehouse.load_partitions(
            int_texts, table=TableRef("textclf-local", "textclf", "reviews_int_text"), partition_column="review_date"
        )

    store = get_model_store(pipeline.config.resolved_store_uri)
    specs = {
        "sentence_input": tf.TensorSpec([None], tf.string, name="sentence"),
        "int_input": tf.TensorSpec([None], tf.int64, name="text"),
    }
    for kind, version in WRONG_SIGNATURE_VERSIONS.items():
        version_dir = home / "export" / version
        export_wrong_signature(version_dir / SAVED_MODEL_DIR, specs[kind])
        (version_dir / METRICS_FILE).write_text("{}", encoding="utf-8")
        store.publish(version_dir, version)

    # Every day but the odd and duplicate days has predictions, so a failure that writes shows.
    for day in RUN_DAYS:
        pipeline.run_day(day, BACKFILL)


def run_check(pipeline, day, params=None, config=None):
    from textclf.operators import SourceDataCheckOperator

    context = pipeline.context(day, MANUAL, {}, params)
    return pipeline.run_task(pipeline.build(SourceDataCheckOperator, "check_source_data", config), context)


# -- Bad rows --------------------------------------------------------------------------------------


def test_odd_texts_each_get_one_prediction(pipeline):
    xcoms = pipeline.run_day(ODD_DAY, MANUAL, tasks=("import_model", "predict", "report"))

    predictions = pipeline.table_rows("predictions", ODD_DAY)
    ids = [row["review_id"] for row in predictions]
    assert ids == list(range(5000, 5000 + len(ODD_TEXTS)))
    assert xcoms["predict"]["rows_predicted"] == len(ODD_TEXTS)
    for key, row in zip(ODD_TEXTS, predictions, strict=True):
        assert row["predicted_label"] in ("negative", "positive"), key
        assert 0.5 <= row["predicted_probability"] <= 1.0, key
    report = pipeline.table_rows("daily_report", ODD_DAY)
    assert report[0]["rows_predicted"] == len(ODD_TEXTS)
    assert report[0]["rows_excluded"] == 0


def test_nul_and_control_characters_survive_loading(pipeline):
    texts = pipeline.query(
        "SELECT text FROM `textclf-local.textclf.reviews` WHERE review_date = @day ORDER BY review_id", {"day": ODD_DAY}
    )

    assert [row["text"] for row in texts] == list(ODD_TEXTS.values())


def test_exclude_policy_counts_excluded_rows(pipeline):
    values = {**pipeline.config.to_dict(), "null_text_policy": "exclude", "predictions_table": "predictions_excluding"}
    values.update(report_table="report_excluding", durations_table="durations_excluding")
    config = PipelineConfig.from_dict(values)

    pipeline.run_day(ODD_DAY, MANUAL, config=config)

    predicted = pipeline.query(
        "SELECT review_id FROM `textclf-local.textclf.predictions_excluding` WHERE run_date = @day ORDER BY 1",
        {"day": ODD_DAY},
    )
    kept = [5000 + index for index, key in enumerate(ODD_TEXTS) if key not in BLANK_KEYS]
    assert [row["review_id"] for row in predicted] == kept
    report = pipeline.query(
        "SELECT source_rows, rows_predicted, rows_excluded FROM `textclf-local.textclf.report_excluding` "
        "WHERE run_date = @day",
        {"day": ODD_DAY},
    )
    assert report == [{"source_rows": len(ODD_TEXTS), "rows_predicted": len(kept), "rows_excluded": len(BLANK_KEYS)}]


def test_duplicate_ids_fail_check_with_count(pipeline):
    with pytest.raises(AirflowFailException) as failure:
        run_check(pipeline, DUPLICATE_DAY)

    assert "3 ids of (review_id) occur more than once, in 8 rows" in str(failure.value)
    assert "textclf-local.textclf.reviews on 2014-12-06" in str(failure.value)


# -- Bad tables and days -----------------------------------------------------------------------------


def test_missing_source_table_fails_check(pipeline):
    before = snapshot(pipeline.database)

    with pytest.raises(AirflowFailException) as failure:
        run_check(pipeline, RUN_DAYS[0], params={"source_table": "textclf.no_such_table"})

    assert str(failure.value).startswith("Source table textclf-local.textclf.no_such_table not found.")
    assert "python -m textclf load FILE --table textclf-local.textclf.no_such_table" in str(failure.value)
    assert snapshot(pipeline.database) == before


def test_day_without_partition_fails_check(pipeline):
    before = snapshot(pipeline.database)

    with pytest.raises(AirflowFailException) as failure:
        run_check(pipeline, EMPTY_DAY)

    assert "No rows in textclf-local.textclf.reviews for review_date = 2014-12-09" in str(failure.value)
    assert "turn on skip_empty_days" in str(failure.value)
    assert snapshot(pipeline.database) == before


def test_day_without_partition_skips_when_configured(pipeline):
    config = PipelineConfig.from_dict({**pipeline.config.to_dict(), "skip_empty_days": True})

    with pytest.raises(AirflowSkipException, match="No rows in textclf-local.textclf.reviews for review_date = 2014-12-09"):
        run_check(pipeline, EMPTY_DAY, config=config)


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("text_column", "comment", "column 'comment' (STRING) is missing"),
        ("id_columns", ["review_id", "logkey"], "column 'logkey' (any type) is missing"),
        ("label_column", "stars", "column 'stars' (any type) is missing"),
        ("source_date_column", "created_date", "column 'created_date' (DATE) is missing"),
        ("source_date_column", "rating", "column 'rating' has type INT64, expected DATE"),
    ],
)
def test_source_column_mismatch_fails_check(pipeline, key, value, problem):
    config = PipelineConfig.from_dict({**pipeline.config.to_dict(), key: value})
    before = snapshot(pipeline.database)

    with pytest.raises(AirflowFailException) as failure:
        run_check(pipeline, RUN_DAYS[0], config=config)

    message = str(failure.value)
    assert message.startswith("Source table textclf-local.textclf.reviews does not match the configuration: ")
    assert problem in message
    assert "Columns found: review_id, text, rating, review_date." in message
    assert snapshot(pipeline.database) == before


def test_source_text_of_wrong_type_fails_check(pipeline):
    before = snapshot(pipeline.database)

    with pytest.raises(AirflowFailException) as failure:
        run_check(pipeline, RUN_DAYS[0], params={"source_table": "textclf.reviews_int_text"})

    assert "Source table textclf-local.textclf.reviews_int_text does not match" in str(failure.value)
    assert "column 'text' has type INT64, expected STRING" in str(failure.value)
    assert snapshot(pipeline.database) == before


# -- Bad files ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "review_id,text,rating,review_date\n1,caf\xe9,5,2014-12-01\n".encode("latin-1"),
            r"bad\.csv is not valid UTF-8: line 2 has the invalid byte\(s\) b'\\xe9'",
        ),
        (
            b"review_id,rating,review_date\n1,5,2014-12-01\n",
            r"the data has no column\(s\) 'text', which the table has .* Add them to the data",
        ),
        (
            b"review_id,text,rating,review_date\n1,ok,five,2014-12-01\n",
            r"column 'rating' has type VARCHAR in the data but BIGINT in the table",
        ),
    ],
    ids=["invalid_utf8", "missing_column", "wrong_type"],
)
def test_bad_file_leaves_table_unchanged(pipeline, tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    before = snapshot(pipeline.database)

    from textclf.warehouse import open_embedded

    with open_embedded(str(pipeline.database)) as warehouse, pytest.raises((LoadError, WarehouseError), match=message):
        load_file(path, warehouse=warehouse, table=pipeline.config.source, partition_column="review_date")

    assert snapshot(pipeline.database) == before


# -- Models with the wrong signature -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "problem"),
    [
        ("sentence_input", "The input is named 'sentence', but 'text' was expected."),
        ("int_input", "The input 'text' is INT64, but the pipeline sends text as STRING."),
    ],
)
def test_import_rejects_wrong_signature(pipeline, kind, problem):
    from textclf.operators import ImportModelOperator

    version = WRONG_SIGNATURE_VERSIONS[kind]
    day = dt.date(2014, 12, 7)
    before = snapshot(pipeline.database)
    context = pipeline.context(day, SCHEDULED, {"train_model": {"model_version": version}})

    with pytest.raises(AirflowFailException) as failure:
        pipeline.run_task(pipeline.build(ImportModelOperator, "import_model"), context)

    message = str(failure.value)
    assert message.startswith(f"Model version {version} at {pipeline.home / 'store' / 'models' / version} cannot be")
    assert "as textclf-local.textclf.textclf_model_20141207." in message
    assert "one STRING column named 'text'" in message
    assert problem in message
    assert snapshot(pipeline.database) == before


@pytest.mark.parametrize(
    ("kind", "problem"),
    [
        ("sentence_input", "the input query has no column 'sentence', which the model needs as STRING"),
        ("int_input", "column 'text' has type string, but the model expects INT64"),
    ],
)
def test_predict_rejects_wrong_signature(pipeline, kind, problem):
    from textclf.operators import PredictOperator
    from textclf.sql_names import model_name
    from textclf.store import get_model_store
    from textclf.warehouse import open_embedded

    # A model imported some other way than the import step, e.g. by hand with CREATE MODEL.
    day = RUN_DAYS[2]
    store = get_model_store(pipeline.config.resolved_store_uri)
    with open_embedded(str(pipeline.database)) as warehouse:
        warehouse.create_model(model_name(pipeline.config, day), store.model_path(WRONG_SIGNATURE_VERSIONS[kind]))
    predictions_before = pipeline.table_rows("predictions")
    context = pipeline.context(day, SCHEDULED, {"import_model": {"model_version": WRONG_SIGNATURE_VERSIONS[kind]}})

    try:
        with pytest.raises(WarehouseError) as failure:
            pipeline.run_task(pipeline.build(PredictOperator, "predict"), context)
    finally:
        pipeline.run_day(day, BACKFILL, tasks=("import_model",))

    assert "ML.PREDICT with model `textclf-local.textclf.textclf_model_20141203`" in str(failure.value)
    assert problem in str(failure.value)
    assert pipeline.table_rows("predictions") == predictions_before


# -- Names that reach SQL ---------------------------------------------------------------------------


IDENTIFIER_KEYS = (
    "project",
    "dataset",
    "source_dataset",
    "source_table",
    "source_date_column",
    "text_column",
    "label_column",
    "predictions_table",
    "report_table",
    "durations_table",
    "result_date_column",
    "model_prefix",
)


@pytest.mark.parametrize("key", IDENTIFIER_KEYS)
@pytest.mark.parametrize("injected", INJECTIONS)
def test_config_rejects_injection_in_every_name(tmp_path, key, injected):
    path = tmp_path / "textclf.json"
    path.write_text(json.dumps({key: injected}), encoding="utf-8")

    with pytest.raises(InvalidIdentifierError):
        load_config(path)


@pytest.mark.parametrize("injected", INJECTIONS)
def test_config_rejects_injection_in_id_columns(tmp_path, injected):
    path = tmp_path / "textclf.json"
    path.write_text(json.dumps({"id_columns": ["review_id", injected]}), encoding="utf-8")

    with pytest.raises(InvalidIdentifierError):
        load_config(path)


@pytest.mark.parametrize(
    "run_date",
    ["2014-12-01'; DROP TABLE textclf.predictions; --", "2014-12-01 OR 1=1", "DROP TABLE textclf.predictions"],
)
def test_run_date_injection_runs_no_sql(pipeline, run_date):
    before = snapshot(pipeline.database)

    with pytest.raises(ValueError, match=r"Invalid `run_date` .* expected a date as YYYY-MM-DD"):
        pipeline.run_day(RUN_DAYS[0], MANUAL, tasks=("predict",), params={"run_date": run_date})

    assert snapshot(pipeline.database) == before


@pytest.mark.parametrize(
    "source_table",
    [
        "textclf.reviews; DROP TABLE textclf.predictions",
        "textclf.reviews WHERE 1=1 --",
        "textclf.`reviews`",
        "textclf.reviews/* */",
        "textclf.reviews'",
    ],
)
def test_source_table_injection_runs_no_sql(pipeline, source_table):
    before = snapshot(pipeline.database)

    with pytest.raises(InvalidIdentifierError, match="Invalid `source_table` param"):
        run_check(pipeline, RUN_DAYS[0], params={"source_table": source_table})

    assert snapshot(pipeline.database) == before


def test_source_table_param_pattern_rejects_injection():
    import re

    pattern = pipeline_dag_params().get_param("source_table").schema["pattern"]
    for injected in ("textclf.reviews; DROP TABLE t", "textclf.reviews --", "textclf.`reviews`", "a.b'"):
        assert re.search(pattern, injected) is None, injected
    assert re.search(pattern, "textclf.reviews") is not None


def pipeline_dag_params():
    import importlib.util

    from conftest import REPOSITORY_DIR

    spec = importlib.util.spec_from_file_location("textclf_daily_params", REPOSITORY_DIR / "dags" / "textclf_daily.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag.params

