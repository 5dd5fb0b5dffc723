"""No password, key or token of the warehouse connection shows in logs, SQL, XComs, reports or deploy output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import REPOSITORY_DIR
from test_reliability_reruns import (
    RUN_DAYS,
    pipeline_environment,
    saved_model_dir,  # noqa: F401 - a fixture
)

PASSWORD = "s3cr3t-password-8f2a"
PRIVATE_KEY = "-----BEGIN PRIVATE KEY-----fake-key-7c41-----END PRIVATE KEY-----"
TOKEN = "ya29.fake-token-0b9d"
SECRETS = (PASSWORD, PRIVATE_KEY, "fake-key-7c41", TOKEN)


def secret_connection(database: Path) -> dict:
    return {
        "conn_type": "duckdb",
        "host": str(database),
        "login": "textclf",
        "password": PASSWORD,
        "extra": {"keyfile_dict": {"private_key": PRIVATE_KEY, "token": TOKEN}},
    }


def assert_no_secret(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{where} contains {secret!r}"


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, saved_model_dir):  # noqa: F811 - the imported fixture
    home = tmp_path_factory.mktemp("secrets")
    with pipeline_environment(home, saved_model_dir, secret_connection(home / "warehouse.duckdb")) as pipeline:
        yield pipeline


def test_connection_secret_is_used(pipeline):
    from airflow.sdk import BaseHook

    connection = BaseHook.get_connection("textclf_warehouse")

    assert connection.password == PASSWORD
    assert connection.extra_dejson["keyfile_dict"]["token"] == TOKEN


# Runs every task of one day in a fresh interpreter, so its output contains every log line that a
# worker would write, whatever logging set-up earlier tests left behind.
TASKS_SCRIPT = textwrap.dedent(
    """
    import datetime as dt, json, os, sys
    from pathlib import Path
    from textclf.config import load_config
    from textclf.operators import (
        ImportModelOperator, PredictOperator, ReportOperator, SourceDataCheckOperator, TrainModelOperator,
    )
    from test_reliability_reruns import MANUAL, Pipeline

    # Importing the test helpers runs conftest, which points TEXTCLF_HOME at a fresh folder.
    os.environ["TEXTCLF_HOME"] = sys.argv[1]
    home = Path(sys.argv[1])
    pipeline = Pipeline(home=home, database=home / "warehouse.duckdb", config=load_config(home / "textclf.json"))
    xcoms = {}
    context = pipeline.context(dt.date.fromisoformat(sys.argv[2]), MANUAL, xcoms)
    rendered = []
    for operator_class, task_id in [
        (SourceDataCheckOperator, "check_source_data"), (TrainModelOperator, "train_model"),
        (ImportModelOperator, "import_model"), (PredictOperator, "predict"), (ReportOperator, "report"),
    ]:
        operator = pipeline.build(operator_class, task_id)
        pipeline.run_task(operator, context)
        rendered.extend(str(getattr(operator, field)) for field in operator.template_fields)
    print("RESULT " + json.dumps({"xcoms": xcoms, "rendered": rendered}, default=str), flush=True)
    """
)


def test_daily_tasks_leak_no_secret(pipeline):
    day = RUN_DAYS[0]
    completed = subprocess.run(
        [sys.executable, "-c", TASKS_SCRIPT, str(pipeline.home), day.isoformat()],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPOSITORY_DIR / "tests")},
    )

    assert completed.returncode == 0, completed.stderr[-3000:]
    output = completed.stdout + completed.stderr
    assert "Connection 'textclf_warehouse' selects the embedded warehouse" in output
    assert "Wrote 40 predictions to textclf-local.textclf.predictions for 2014-12-01" in output
    assert_no_secret(output, "the task output")
    result = json.loads(completed.stdout.split("RESULT ", 1)[1])
    assert set(result["xcoms"]) == {"check_source_data", "train_model", "import_model", "predict", "report"}
    assert result["xcoms"]["predict"]["rows_predicted"] == 40
    assert_no_secret(json.dumps(result["xcoms"]), "the XComs")
    assert len(result["rendered"]) == 9
    assert_no_secret("\n".join(result["rendered"]), "the rendered templates")

    report_files = sorted((pipeline.home / "store" / "reports" / day.isoformat()).iterdir())
    assert report_files
    for path in report_files:
        assert_no_secret(path.read_bytes().decode("utf-8", errors="replace"), str(path))
    for table in ("daily_report", "task_durations", "predictions"):
        assert_no_secret(json.dumps(pipeline.table_rows(table), default=str), f"table {table}")
    for path in Path(os.environ["AIRFLOW_HOME"]).rglob("*.log"):
        assert_no_secret(path.read_text(encoding="utf-8", errors="replace"), str(path))


def test_deploy_dry_run_prints_no_secret(tmp_path, monkeypatch, capsys):
    from textclf.cli import main

    for folder in ("dags", "sql", "plugins/textclf"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "requirements-composer.txt").write_text("duckdb==2.0.0\n")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"project": "textclf-prod", "store_uri": "gs://bucket/textclf"}), encoding="utf-8")
    monkeypatch.setenv("AIRFLOW_CONN_TEXTCLF_WAREHOUSE", json.dumps(secret_connection(tmp_path / "w.duckdb")))
    monkeypatch.setenv("GOOGLE_OAUTH_ACCESS_TOKEN", TOKEN)

    status = main(
        [
            "deploy", "--environment", "textclf-prod", "--location", "us-central1", "--config", str(config),
            "--source-dir", str(tmp_path), "--dry-run",
        ]
    )

    assert status == 0
    captured = capsys.readouterr()
    assert "gcloud composer environments update textclf-prod" in captured.out
    assert_no_secret(captured.out + captured.err, "the deploy dry run")
