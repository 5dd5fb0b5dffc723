"""The SQL templates render to the expected BigQuery SQL, with names validated and values as parameters."""

from __future__ import annotations

import datetime as dt
import re
from types import SimpleNamespace

import pytest
from airflow.sdk import DAG

from conftest import REPOSITORY_DIR
from textclf.config import PipelineConfig
from textclf.identifiers import InvalidIdentifierError
from textclf.operators import PredictOperator, ReportOperator, SourceDataCheckOperator, TrainModelOperator

RUN_DAY = dt.date(2014, 12, 1)


def _render(operator_class, config=None, params=None, context=None, **kwargs):
    config = config or PipelineConfig(project="my-project", dataset="analytics")
    with DAG("render_test", schedule=None, template_searchpath=[str(REPOSITORY_DIR / "sql")]):
        operator = operator_class(task_id="step", config=config, **kwargs)
    operator.resolve_template_files()
    if context is None:
        context = {"params": {"run_date": RUN_DAY.isoformat(), **(params or {})}, "data_interval_start": None}
    operator.render_template_fields(context)
    return operator


def _normalise(sql: str) -> str:
    return re.sub(r"\s+", " ", sql).strip()


def test_predict_sql_renders_exactly():
    sql = _normalise(_render(PredictOperator).sql)

    assert sql == _normalise(
        """
        -- Predictions for one day of the source table, written into that day's partition of the
        -- predictions table. ML.PREDICT passes the id columns and the true label through unchanged and
        -- adds the model's outputs: predicted_label, predicted_probability and class_probabilities.
        SELECT
          review_id,
          predicted_label,
          predicted_probability,
          class_probabilities,
          actual_label,
          @model_version AS model_version,
          CURRENT_TIMESTAMP() AS predicted_at,
          @run_date AS run_date
        FROM ML.PREDICT(
          MODEL `my-project.analytics.textclf_model_20141201`,
          (
            SELECT
              review_id,
              -- NULL text is scored as an empty string, so every source row gets a prediction.
              COALESCE(text, '') AS text,
              CASE
                WHEN rating BETWEEN 1 AND 4 THEN 'negative'
                WHEN rating BETWEEN 9 AND 10 THEN 'positive'
              END AS actual_label
            FROM `my-project.analytics.reviews`
            WHERE review_date = @run_date
          )
        )
        """
    )


def test_predict_sql_excludes_blank_text_when_configured():
    config = PipelineConfig(project="my-project", dataset="analytics", null_text_policy="exclude", label_column=None)

    sql = _normalise(_render(PredictOperator, config=config).sql)

    assert "COALESCE" not in sql
    assert "AND text IS NOT NULL AND TRIM(text) != ''" in sql
    assert "CAST(NULL AS STRING) AS actual_label" in sql


def test_predict_sql_places_every_id_column():
    config = PipelineConfig(project="my-project", dataset="analytics", id_columns=("pid", "logkey"), text_column="body")

    sql = _normalise(_render(PredictOperator, config=config).sql)

    assert sql.startswith("-- Predictions")
    assert "SELECT pid, logkey, predicted_label" in sql
    assert "SELECT pid, logkey, -- NULL text" in sql
    assert "COALESCE(body, '') AS text" in sql


def test_training_sql_reads_only_days_before_run():
    sql = _normalise(_render(TrainModelOperator).sql)

    assert "WHERE review_date < @run_date" in sql
    assert "FROM `my-project.analytics.reviews`" in sql
    assert "rating BETWEEN 9 AND 10 THEN 'positive'" in sql


def test_check_sql_uses_source_param_override():
    sql = _normalise(_render(SourceDataCheckOperator, params={"source_table": "staging.comments"}).sql)

    assert "FROM `my-project.staging.comments`" in sql
    assert "`my-project.analytics.reviews`" not in sql


def test_report_renders_all_its_templates():
    operator = _render(ReportOperator)

    assert "FROM `my-project.analytics.predictions`" in operator.sql
    assert "@low_confidence_threshold" in operator.sql
    assert "FROM `my-project.analytics.daily_report`" in operator.day_sql
    assert "UNNEST(class_shares)" in operator.history_sql
    assert "@bucket_count" in operator.histogram_sql
    assert "FROM `my-project.analytics.task_durations`" in operator.durations_sql


@pytest.mark.parametrize(
    "injected",
    [
        "analytics.reviews`; DROP TABLE analytics.reviews; --",
        "analytics.reviews' OR '1'='1",
        "analytics.reviews -- comment",
        "analytics.reviews/* comment */",
        "analytics.reviews;",
        "analytics.`reviews`",
    ],
)
def test_source_param_injection_is_rejected(injected):
    with pytest.raises(InvalidIdentifierError, match="Invalid `source_table` param"):
        _render(SourceDataCheckOperator, params={"source_table": injected})


def test_values_never_rendered_into_sql():
    rendered = [_render(cls).sql for cls in (PredictOperator, TrainModelOperator, SourceDataCheckOperator)]

    for sql in rendered:
        assert "2014-12-01" not in sql
        assert "20141201" not in sql.replace("textclf_model_20141201", "")


def test_manual_run_without_logical_date_renders():
    # A run triggered by hand with no logical date has no data interval and no run_date param.
    queued = dt.datetime(2014, 12, 1, 18, 0, tzinfo=dt.timezone.utc)  # 2014-12-02 03:00 in Seoul
    context = {"params": {"run_date": None}, "data_interval_start": None, "dag_run": SimpleNamespace(run_after=queued)}

    sql = _normalise(_render(PredictOperator, context=context).sql)

    assert "MODEL `my-project.analytics.textclf_model_20141201`" in sql
    assert "WHERE review_date = @run_date" in sql


def test_uri_ending_in_json_is_not_a_template(tmp_path):
    config = PipelineConfig(project="my-project", dataset="analytics", store_uri="gs://bucket/models/config.json")

    operator = _render(PredictOperator, config=config)

    assert operator.config.store_uri == "gs://bucket/models/config.json"
    assert operator.template_fields == ("sql",)
