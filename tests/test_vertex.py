"""Tests of the Vertex AI training job: its spec, its package, its wait loop and the publish."""

from __future__ import annotations

import datetime as dt
import json
import tarfile
from types import SimpleNamespace

import pytest

import textclf
from fakes_gcp import FakeStorageClient
from textclf.config import PipelineConfig
from textclf.store import LocalModelStore
from textclf.store_gcs import GCSModelStore
from textclf.vertex import (
    TRAINING_REQUIREMENTS,
    build_custom_job_spec,
    build_source_distribution,
    run_training_job,
    train_version_on_vertex,
)

JOB_NAME = "projects/123/locations/us-central1/customJobs/987"


class FakeCustomJobHook:
    """Records CustomJobHook calls and walks a job through the given states."""

    def __init__(self, states: list[str], error_message: str = "") -> None:
        self.states = list(states)
        self.error_message = error_message
        self.calls: list[tuple[str, dict]] = []

    def create_custom_job(self, **request):
        self.calls.append(("create_custom_job", request))
        return SimpleNamespace(name=JOB_NAME)

    def get_custom_job(self, **request):
        self.calls.append(("get_custom_job", request))
        state = self.states.pop(0)
        return SimpleNamespace(state=SimpleNamespace(name=state), error=SimpleNamespace(message=self.error_message))

    def cancel_custom_job(self, **request):
        self.calls.append(("cancel_custom_job", request))


def test_custom_job_spec_in_full():
    spec = build_custom_job_spec(
        display_name="textclf-train-20141201-abc",
        package_uri="gs://staging/textclf/20141201-abc/textclf-0.1.0.tar.gz",
        examples_query_uri="gs://staging/textclf/20141201-abc/training_examples.sql",
        query_parameters={"run_date": {"type": "DATE", "value": "2014-12-01"}},
        bigquery_project="textclf-prod",
        bigquery_location="US",
        output_dir="gs://models/store/models/.staging-20141201-abc",
        trained_before="2014-12-01",
        max_epochs=8,
        machine_type="n1-standard-8",
        container_uri="us-docker.pkg.dev/vertex-ai/training/tf-cpu.2-17.py310:latest",
        base_output_uri="gs://staging/textclf/20141201-abc/output",
        labels={"dag_id": "textclf_daily", "task_id": "Train"},
        service_account="trainer@textclf-prod.iam.gserviceaccount.com",
    )

    assert spec == {
        "display_name": "textclf-train-20141201-abc",
        "labels": {"dag_id": "textclf_daily", "task_id": "train"},
        "job_spec": {
            "worker_pool_specs": [
                {
                    "machine_spec": {"machine_type": "n1-standard-8"},
                    "replica_count": 1,
                    "python_package_spec": {
                        "executor_image_uri": "us-docker.pkg.dev/vertex-ai/training/tf-cpu.2-17.py310:latest",
                        "package_uris": ["gs://staging/textclf/20141201-abc/textclf-0.1.0.tar.gz"],
                        "python_module": "textclf",
                        "args": [
                            "train",
                            "--examples-query",
                            "gs://staging/textclf/20141201-abc/training_examples.sql",
                            "--query-parameters",
                            '{"run_date": {"type": "DATE", "value": "2014-12-01"}}',
                            "--bigquery-project",
                            "textclf-prod",
                            "--bigquery-location",
                            "US",
                            "--output-dir",
                            "gs://models/store/models/.staging-20141201-abc",
                            "--trained-before",
                            "2014-12-01",
                            "--max-epochs",
                            "8",
                        ],
                    },
                }
            ],
            "base_output_directory": {"output_uri_prefix": "gs://staging/textclf/20141201-abc/output"},
            "service_account": "trainer@textclf-prod.iam.gserviceaccount.com",
        },
    }


def test_custom_job_spec_omits_default_service_account():
    spec = build_custom_job_spec(
        display_name="d",
        package_uri="gs://s/p.tar.gz",
        examples_query_uri="gs://s/q.sql",
        query_parameters={},
        bigquery_project="textclf-prod",
        bigquery_location="US",
        output_dir="gs://m/o",
        trained_before="2014-12-01",
        max_epochs=1,
        machine_type="n1-standard-4",
        container_uri="image",
        base_output_uri="gs://s/out",
    )

    assert "service_account" not in spec["job_spec"]
    assert spec["labels"] == {}


def test_source_distribution_declares_requirements(tmp_path):
    archive = build_source_distribution(tmp_path)

    assert archive.name == f"textclf-{textclf.__version__}.tar.gz"
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        setup_py = tar.extractfile(f"textclf-{textclf.__version__}/setup.py").read().decode()
    root = f"textclf-{textclf.__version__}"
    assert f"{root}/textclf/__main__.py" in names
    assert f"{root}/textclf/training/bigquery_examples.py" in names
    assert f"{root}/textclf/warehouse/bigquery_params.py" in names
    assert f"{root}/PKG-INFO" in names
    assert not [name for name in names if "__pycache__" in name or "demo_data" in name]
    assert f"install_requires={list(TRAINING_REQUIREMENTS)!r}" in setup_py


def test_source_distribution_is_reproducible(tmp_path):
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()

    first = build_source_distribution(tmp_path / "first")
    second = build_source_distribution(tmp_path / "second")

    with tarfile.open(first) as one, tarfile.open(second) as two:
        first_members = [(member.name, member.mtime, member.size) for member in one.getmembers()]
        second_members = [(member.name, member.mtime, member.size) for member in two.getmembers()]
    assert first_members == second_members
    assert {mtime for _, mtime, _ in first_members} == {0}


def test_run_training_job_waits_for_success():
    hook = FakeCustomJobHook(["JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"])

    name = run_training_job({"display_name": "d"}, project="textclf-prod", region="us-central1", hook=hook, poll_interval=0)

    assert name == JOB_NAME
    assert hook.calls[0] == (
        "create_custom_job",
        {"project_id": "textclf-prod", "region": "us-central1", "custom_job": {"display_name": "d"}},
    )
    assert hook.calls[1:] == [
        ("get_custom_job", {"project_id": "textclf-prod", "region": "us-central1", "custom_job": "987"})
    ] * 3


def test_run_training_job_failure_names_job():
    hook = FakeCustomJobHook(["JOB_STATE_FAILED"], error_message="The replica workerpool0-0 exited with a non-zero status of 1.")

    with pytest.raises(RuntimeError) as raised:
        run_training_job({}, project="textclf-prod", region="us-central1", hook=hook, poll_interval=0)

    message = str(raised.value)
    assert JOB_NAME in message
    assert "JOB_STATE_FAILED" in message
    assert "non-zero status of 1" in message


def test_run_training_job_hands_out_cancel():
    hook = FakeCustomJobHook(["JOB_STATE_SUCCEEDED"])
    cancels = []

    run_training_job({}, project="textclf-prod", region="us-central1", hook=hook, poll_interval=0, on_job_created=cancels.append)
    cancels[0]()

    assert hook.calls[-1] == (
        "cancel_custom_job",
        {"project_id": "textclf-prod", "region": "us-central1", "custom_job": "987"},
    )


def test_train_version_uploads_runs_and_publishes(monkeypatch):
    monkeypatch.setattr("textclf.vertex.uuid.uuid4", lambda: SimpleNamespace(hex="0123456789abcdef"))
    config = PipelineConfig(
        project="textclf-prod",
        location="US",
        store_uri="gs://textclf-models/store",
        training_backend="vertex",
        vertex_staging_bucket="gs://textclf-staging",
        extra={"vertex_service_account": "trainer@textclf-prod.iam.gserviceaccount.com"},
    )
    storage = FakeStorageClient()
    store = GCSModelStore(config.store_uri, client=storage)
    staged = "store/models/.staging-20141201-0123456789ab"
    hook = FakeCustomJobHook(["JOB_STATE_SUCCEEDED"])

    # The fake job "writes" its export when it is created.
    create = hook.create_custom_job

    def create_and_export(**request):
        storage.objects[("textclf-models", f"{staged}/metrics.json")] = b"{}"
        storage.objects[("textclf-models", f"{staged}/saved_model/saved_model.pb")] = b"graph"
        return create(**request)

    hook.create_custom_job = create_and_export

    uri = train_version_on_vertex(
        config=config,
        store=store,
        version="20141201",
        examples_sql="SELECT text, label FROM t WHERE d < @run_date",
        run_day=dt.date(2014, 12, 1),
        labels={"dag_id": "textclf_daily", "task_id": "train"},
        hook=hook,
        storage_client=storage,
        poll_interval=0,
    )

    assert uri == "gs://textclf-models/store/models/20141201"
    assert store.versions() == ["20141201"]
    staging = "textclf/20141201-0123456789ab"
    assert storage.objects[("textclf-staging", f"{staging}/training_examples.sql")] == b"SELECT text, label FROM t WHERE d < @run_date"
    assert ("textclf-staging", f"{staging}/textclf-{textclf.__version__}.tar.gz") in storage.objects
    request = hook.calls[0][1]
    assert request["project_id"] == "textclf-prod"
    assert request["region"] == "us-central1"
    spec = request["custom_job"]
    pool = spec["job_spec"]["worker_pool_specs"][0]
    assert spec["display_name"] == "textclf-train-20141201-0123456789ab"
    assert spec["job_spec"]["service_account"] == "trainer@textclf-prod.iam.gserviceaccount.com"
    assert pool["python_package_spec"]["package_uris"] == [f"gs://textclf-staging/{staging}/textclf-{textclf.__version__}.tar.gz"]
    args = pool["python_package_spec"]["args"]
    assert args[args.index("--output-dir") + 1] == f"gs://textclf-models/{staged}"
    assert json.loads(args[args.index("--query-parameters") + 1]) == {"run_date": {"type": "DATE", "value": "2014-12-01"}}


def test_train_version_requires_staging_bucket(tmp_path):
    config = PipelineConfig(store_uri="gs://textclf-models/store", training_backend="vertex")

    with pytest.raises(ValueError, match="`vertex_staging_bucket` is empty"):
        train_version_on_vertex(
            config=config,
            store=GCSModelStore(config.store_uri, client=FakeStorageClient()),
            version="20141201",
            examples_sql="SELECT 1",
            run_day=dt.date(2014, 12, 1),
        )


def test_train_version_requires_gcs_store(tmp_path):
    config = PipelineConfig(training_backend="vertex", vertex_staging_bucket="gs://textclf-staging")

    with pytest.raises(ValueError, match="needs a model store on Cloud Storage"):
        train_version_on_vertex(
            config=config,
            store=LocalModelStore(tmp_path),
            version="20141201",
            examples_sql="SELECT 1",
            run_day=dt.date(2014, 12, 1),
        )
