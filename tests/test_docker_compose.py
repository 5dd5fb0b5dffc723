"""Tests of docker-compose.yaml, validated and normalized by docker compose itself."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "airflow-init")


def compose_command() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


@pytest.fixture(scope="module")
def config() -> dict:
    command = compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    # An empty environment keeps a developer's .env or shell variables out of the checked values.
    result = subprocess.run(
        [*command, "--project-directory", str(ROOT), "-f", str(ROOT / "docker-compose.yaml"), "config"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin:/usr/local/bin"},
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_compose_defines_airflow_stack(config):
    assert set(config["services"]) == {"postgres", *AIRFLOW_SERVICES}
    assert config["services"]["airflow-apiserver"]["command"] in ("api-server", ["api-server"])
    assert config["services"]["airflow-scheduler"]["command"] in ("scheduler", ["scheduler"])
    assert config["services"]["airflow-dag-processor"]["command"] in ("dag-processor", ["dag-processor"])
    assert config["services"]["airflow-triggerer"]["command"] in ("triggerer", ["triggerer"])


def test_compose_binds_ui_to_localhost_only(config):
    ports = config["services"]["airflow-apiserver"]["ports"]

    assert len(ports) == 1
    port = ports[0]
    if isinstance(port, dict):
        assert port["host_ip"] == "127.0.0.1"
        assert str(port["published"]) == "8080"
        assert port["target"] == 8080
    else:
        assert port in ("127.0.0.1:8080:8080", "127.0.0.1:8080:8080/tcp")
    for name, service in config["services"].items():
        if name != "airflow-apiserver":
            assert "ports" not in service, name


@pytest.mark.parametrize("service", AIRFLOW_SERVICES)
def test_compose_mounts_code_and_data(config, service):
    volumes = config["services"][service]["volumes"]
    mounts = {}
    for volume in volumes:
        if isinstance(volume, dict):
            mounts[volume["target"]] = volume["source"]
        else:
            source, target = volume.split(":")[:2]
            mounts[target] = source

    assert mounts["/opt/airflow/dags"] == str(ROOT / "dags")
    assert mounts["/opt/airflow/plugins"] == str(ROOT / "plugins")
    assert mounts["/opt/airflow/sql"] == str(ROOT / "sql")
    assert mounts["/opt/airflow/textclf"] == "textclf-data"
    assert "textclf-data" in config["volumes"]


@pytest.mark.parametrize("service", AIRFLOW_SERVICES)
def test_compose_defaults_to_embedded_warehouse(config, service):
    environment = config["services"][service]["environment"]

    assert environment["AIRFLOW_CONN_TEXTCLF_WAREHOUSE"] == (
        '{"conn_type": "duckdb", "host": "/opt/airflow/textclf/warehouse.duckdb"}'
    )
    assert environment["TEXTCLF_HOME"] == "/opt/airflow/textclf"
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in environment


def test_compose_builds_on_official_image(config):
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()

    assert config["services"]["airflow-scheduler"]["build"]["dockerfile"] == "docker/Dockerfile"
    assert "FROM apache/airflow:3.3.2-python3.11" in dockerfile
    assert "-r /tmp/requirements-composer.txt" in dockerfile


def test_compose_init_migrates_and_creates_admin(config):
    environment = config["services"]["airflow-init"]["environment"]

    assert environment["_AIRFLOW_DB_MIGRATE"] == "true"
    assert environment["_AIRFLOW_WWW_USER_CREATE"] == "true"
    for service in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"):
        condition = config["services"][service]["depends_on"]["airflow-init"]["condition"]
        assert condition == "service_completed_successfully"
