"""The pipeline configuration file."""

from __future__ import annotations

import json

import pytest

from textclf.config import PipelineConfig, load_config
from textclf.identifiers import InvalidIdentifierError, TableRef


def test_defaults_name_embedded_tables():
    config = PipelineConfig()

    assert config.source == TableRef("textclf-local", "textclf", "reviews")
    assert config.predictions.sql == "`textclf-local.textclf.predictions`"
    assert config.model("20141201") == TableRef("textclf-local", "textclf", "textclf_model_20141201")
    assert config.timezone == "Asia/Seoul"


def test_load_config_reads_json_file(tmp_path, monkeypatch):
    path = tmp_path / "textclf.json"
    path.write_text(json.dumps({"project": "my-project", "id_columns": ["pid", "logkey"], "min_rows": 10}))
    monkeypatch.setenv("TEXTCLF_CONFIG", str(path))

    config = load_config()

    assert config.project == "my-project"
    assert config.id_columns == ("pid", "logkey")
    assert config.min_rows == 10


def test_load_config_without_file_returns_defaults(monkeypatch):
    monkeypatch.delenv("TEXTCLF_CONFIG", raising=False)

    assert load_config() == PipelineConfig()


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "textclf.json"
    path.write_text(json.dumps({"sourc_table": "x"}))

    with pytest.raises(ValueError, match=r"Unknown configuration keys \['sourc_table'\]"):
        load_config(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json not found"):
        load_config(tmp_path / "missing.json")


def test_invalid_json_is_named(tmp_path):
    path = tmp_path / "textclf.json"
    path.write_text("{not json")

    with pytest.raises(ValueError, match="is not valid JSON"):
        load_config(path)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("text_column", "text; DROP TABLE t"),
        ("dataset", "ds`"),
        ("predictions_table", "p--"),
        ("label_column", "rating)"),
        ("id_columns", ["id", "x'"]),
    ],
)
def test_invalid_identifiers_are_rejected(key, value):
    with pytest.raises(InvalidIdentifierError):
        PipelineConfig.from_dict({key: value})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("null_text_policy", "drop", "`null_text_policy` must be one of"),
        ("training_backend", "gpu", "`training_backend` must be one of"),
        ("max_blank_text_share", 1.5, "`max_blank_text_share` must be between 0 and 1"),
    ],
)
def test_invalid_settings_are_rejected(key, value, message):
    with pytest.raises(ValueError, match=message):
        PipelineConfig.from_dict({key: value})
