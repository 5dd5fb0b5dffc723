"""The DAG file parses cleanly and cheaply."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPOSITORY_DIR

DAG_FILE = REPOSITORY_DIR / "dags" / "textclf_daily.py"
HEAVY_MODULES = ("tensorflow", "duckdb", "pandas", "google.cloud.bigquery", "keras", "matplotlib")

_PARSE_SCRIPT = """
import json, runpy, sys
namespace = runpy.run_path(sys.argv[1])
dag = namespace["dag"]
print(json.dumps({
    "dag_id": dag.dag_id,
    "tasks": [task.task_id for task in dag.tasks],
    "edges": sorted([task.task_id, downstream] for task in dag.tasks for downstream in task.downstream_task_ids),
    "max_active_runs": dag.max_active_runs,
    "modules": sorted(sys.modules),
}))
"""


def _parse_in_fresh_interpreter(extra_env: dict[str, str] | None = None) -> dict:
    env = {**os.environ, **(extra_env or {})}
    env["PYTHONPATH"] = str(REPOSITORY_DIR / "plugins")
    completed = subprocess.run(
        [sys.executable, "-c", _PARSE_SCRIPT, str(DAG_FILE)], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_dag_parses_with_expected_tasks():
    parsed = _parse_in_fresh_interpreter()

    assert parsed["dag_id"] == "textclf_daily"
    assert parsed["tasks"] == ["check_source_data", "train_model", "import_model", "predict", "report"]
    assert parsed["edges"] == [
        ["check_source_data", "train_model"],
        ["import_model", "predict"],
        ["predict", "report"],
        ["train_model", "import_model"],
    ]
    assert parsed["max_active_runs"] == 1


def test_dag_parse_imports_nothing_heavy():
    modules = set(_parse_in_fresh_interpreter()["modules"])

    for heavy in HEAVY_MODULES:
        assert heavy not in modules, f"parsing the DAG imported {heavy}"


def test_dag_parse_reads_config_file(tmp_path):
    config_file = tmp_path / "textclf.json"
    config_file.write_text(json.dumps({"timezone": "UTC", "source_table": "comments"}), encoding="utf-8")

    parsed = _parse_in_fresh_interpreter({"TEXTCLF_CONFIG": str(config_file)})

    assert parsed["dag_id"] == "textclf_daily"


def test_dag_parse_rejects_invalid_config(tmp_path):
    config_file = tmp_path / "textclf.json"
    config_file.write_text(json.dumps({"source_table": "reviews; DROP TABLE x"}), encoding="utf-8")
    env = {**os.environ, "TEXTCLF_CONFIG": str(config_file), "PYTHONPATH": str(REPOSITORY_DIR / "plugins")}

    completed = subprocess.run(
        [sys.executable, "-c", _PARSE_SCRIPT, str(DAG_FILE)], capture_output=True, text=True, env=env
    )

    assert completed.returncode != 0
    assert "Invalid `source_table` 'reviews; DROP TABLE x'" in completed.stderr
