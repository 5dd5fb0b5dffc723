"""Tests of the deploy command through its dry-run output and a fake gcloud."""

from __future__ import annotations

import subprocess
from types import SimpleNamespace

import pytest

from textclf.cli import main
from textclf.deploy import render_command


@pytest.fixture
def checkout(tmp_path):
    for folder in ("dags", "sql", "plugins/textclf"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "requirements-composer.txt").write_text("duckdb==2.0.0\n")
    (tmp_path / "config.json").write_text("{}")
    return tmp_path


def test_dry_run_prints_every_command(checkout, capsys):
    status = main(
        [
            "deploy", "--environment", "textclf-prod", "--location", "us-central1", "--project", "textclf-prod",
            "--source-dir", str(checkout), "--dry-run",
        ]
    )

    assert status == 0
    exclude = r"'--exclude=.*__pycache__.*|.*\.pyc$'"
    assert capsys.readouterr().out.splitlines() == [
        "DAG_GCS_PREFIX=$(gcloud composer environments describe textclf-prod --location us-central1 "
        "--project textclf-prod '--format=value(config.dagGcsPrefix)')",
        f'gcloud storage rsync --recursive {exclude} {checkout}/dags "${{DAG_GCS_PREFIX}}"',
        "gcloud storage rsync --recursive --delete-unmatched-destination-objects "
        f'{exclude} {checkout}/sql "${{DAG_GCS_PREFIX}}/sql"',
        "gcloud storage rsync --recursive --delete-unmatched-destination-objects "
        f'{exclude} {checkout}/plugins/textclf "${{DAG_GCS_PREFIX%/dags}}/plugins/textclf"',
        "gcloud composer environments update textclf-prod --location us-central1 --project textclf-prod "
        f"--update-pypi-packages-from-file={checkout}/requirements-composer.txt",
    ]


def test_dry_run_with_config_sets_env_variable(checkout, capsys):
    status = main(
        [
            "deploy", "--environment", "textclf-prod", "--location", "us-central1", "--config",
            str(checkout / "config.json"), "--source-dir", str(checkout), "--skip-packages", "--dry-run",
        ]
    )

    assert status == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6
    assert lines[0] == (
        "DAG_GCS_PREFIX=$(gcloud composer environments describe textclf-prod --location us-central1 "
        "'--format=value(config.dagGcsPrefix)')"
    )
    assert lines[4] == f'gcloud storage cp {checkout}/config.json "${{DAG_GCS_PREFIX%/dags}}/data/textclf/config.json"'
    assert lines[5] == (
        "gcloud composer environments update textclf-prod --location us-central1 "
        "--update-env-variables=TEXTCLF_CONFIG=/home/airflow/gcs/data/textclf/config.json"
    )


def test_dry_run_output_is_valid_bash(checkout, capsys):
    main(["deploy", "--environment", "e", "--location", "us-central1", "--source-dir", str(checkout), "--dry-run"])
    script = capsys.readouterr().out

    result = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)

    assert result.returncode == 0
    assert result.stderr == ""


def test_missing_folder_fails_before_gcloud(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr("textclf.deploy.subprocess.run", lambda *a, **k: calls.append(a))

    status = main(["deploy", "--environment", "e", "--location", "us-central1", "--source-dir", str(tmp_path)])

    assert status == 2
    assert calls == []


def test_deploy_runs_commands_with_bucket(checkout, monkeypatch):
    commands = []

    def fake_run(command, **kwargs):
        commands.append(command)
        if "describe" in command:
            return SimpleNamespace(returncode=0, stdout="gs://us-central1-textclf-bucket/dags\n", stderr="")
        return SimpleNamespace(returncode=0, stdout="", stderr="")

    monkeypatch.setattr("textclf.deploy.subprocess.run", fake_run)

    status = main(["deploy", "--environment", "e", "--location", "us-central1", "--source-dir", str(checkout)])

    assert status == 0
    assert [render_command(command) for command in commands[1:4]] == [
        rf"gcloud storage rsync --recursive '--exclude=.*__pycache__.*|.*\.pyc$' {checkout}/dags gs://us-central1-textclf-bucket/dags",
        "gcloud storage rsync --recursive --delete-unmatched-destination-objects "
        rf"'--exclude=.*__pycache__.*|.*\.pyc$' {checkout}/sql gs://us-central1-textclf-bucket/dags/sql",
        "gcloud storage rsync --recursive --delete-unmatched-destination-objects "
        rf"'--exclude=.*__pycache__.*|.*\.pyc$' {checkout}/plugins/textclf gs://us-central1-textclf-bucket/plugins/textclf",
    ]
    assert commands[4][-1] == f"--update-pypi-packages-from-file={checkout}/requirements-composer.txt"


def test_unchanged_packages_are_not_an_error(checkout, monkeypatch):
    def fake_run(command, **kwargs):
        if "describe" in command:
            return SimpleNamespace(returncode=0, stdout="gs://b-123/dags\n", stderr="")
        if "update" in command:
            return SimpleNamespace(returncode=1, stdout="", stderr="ERROR: INVALID_ARGUMENT: No change in configuration.")
        return SimpleNamespace(returncode=0, stdout="", stderr="")

    monkeypatch.setattr("textclf.deploy.subprocess.run", fake_run)

    assert main(["deploy", "--environment", "e", "--location", "us-central1", "--source-dir", str(checkout)]) == 0


def test_unexpected_dag_prefix_fails(checkout, monkeypatch):
    monkeypatch.setattr(
        "textclf.deploy.subprocess.run", lambda command, **kwargs: SimpleNamespace(returncode=0, stdout="\n", stderr="")
    )

    assert main(["deploy", "--environment", "e", "--location", "us-central1", "--source-dir", str(checkout)]) == 1
