"""Training on Vertex AI: the train command as a custom Python package training job.

The job runs ``python -m textclf train --examples-query ...`` in Google's prebuilt TensorFlow
training container. Vertex AI installs our package from a source distribution in the staging
bucket, and pip installs the packages listed in its ``install_requires`` that the container lacks.
The job reads its examples from BigQuery and writes the SavedModel to a staging folder of the model
store, which :meth:`textclf.store_gcs.GCSModelStore.publish_remote` then completes as a version.
"""

from __future__ import annotations

import io
import json
import logging
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import textclf
from textclf.store_gcs import parse_gcs_uri
from textclf.warehouse.bigquery import sanitize_labels

if TYPE_CHECKING:
    import datetime as dt

    from textclf.config import PipelineConfig
    from textclf.store import ModelStore

log = logging.getLogger(__name__)

# Packages the train command needs beyond TensorFlow, pinned as in requirements.txt where the
# container's Python 3.10 allows it.
# NOTE: this list covers what the BigQuery Arrow reader needs. It is not checked against each
# prebuilt container image, and pip skips any package the image already has.
TRAINING_REQUIREMENTS: tuple[str, ...] = (
    "google-cloud-bigquery==3.47.0",
    "google-cloud-bigquery-storage==2.43.0",
    "pyarrow>=15",
)
SUCCEEDED_STATE = "JOB_STATE_SUCCEEDED"
FAILED_STATES = frozenset(
    {"JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED", "JOB_STATE_PAUSED", "JOB_STATE_PARTIALLY_SUCCEEDED"}
)
_SDIST_EXCLUDED_DIRS = frozenset({"__pycache__", "demo_data"})

_SETUP_PY = """from setuptools import find_packages, setup

setup(
    name="textclf",
    version={version!r},
    packages=find_packages(),
    install_requires={requirements!r},
    python_requires=">=3.10",
)
"""


def build_source_distribution(
    output_dir: Path, *, package_dir: Path | None = None, requirements: tuple[str, ...] = TRAINING_REQUIREMENTS
) -> Path:
    """Write ``textclf-<version>.tar.gz``, a source distribution of the package for Vertex AI.

    The archive has a ``setup.py`` whose ``install_requires`` lists ``requirements``, and every
    ``.py`` file of the package except the demo data. Entries carry no timestamps, so the same
    sources give the same bytes.

    :param output_dir: folder to write the archive into.
    :param package_dir: the ``textclf`` package folder; defaults to the imported package.
    :param requirements: pip requirement strings the job installs along with the package.
    """
    package_dir = Path(package_dir or Path(textclf.__file__).parent)
    root = f"textclf-{textclf.__version__}"
    archive = Path(output_dir) / f"{root}.tar.gz"

    files: dict[str, bytes] = {
        f"{root}/setup.py": _SETUP_PY.format(version=textclf.__version__, requirements=list(requirements)).encode(),
        f"{root}/PKG-INFO": f"Metadata-Version: 2.1\nName: textclf\nVersion: {textclf.__version__}\n".encode(),
    }
    for path in sorted(package_dir.rglob("*.py")):
        relative = path.relative_to(package_dir)
        if _SDIST_EXCLUDED_DIRS.intersection(relative.parts):
            continue
        files[f"{root}/textclf/{relative.as_posix()}"] = path.read_bytes()

    with tarfile.open(archive, "w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(content))
    return archive


def build_custom_job_spec(
    *,
    display_name: str,
    package_uri: str,
    examples_query_uri: str,
    query_parameters: Mapping[str, Any],
    bigquery_project: str,
    bigquery_location: str,
    output_dir: str,
    trained_before: str,
    max_epochs: int,
    machine_type: str,
    container_uri: str,
    base_output_uri: str,
    labels: Mapping[str, str] | None = None,
    service_account: str | None = None,
) -> dict[str, Any]:
    """Return the Vertex AI ``CustomJob`` that runs the train command, as a dict for the API.

    :param display_name: the job's name in the console.
    :param package_uri: ``gs://`` URI of the package's source distribution.
    :param examples_query_uri: ``gs://`` URI of the rendered training examples query.
    :param query_parameters: the query's parameters, JSON-safe (see ``parameters_to_json``).
    :param bigquery_project: project that runs the examples query.
    :param bigquery_location: BigQuery location of the source tables.
    :param output_dir: ``gs://`` folder the job writes ``saved_model/`` and ``metrics.json`` into.
    :param trained_before: the run's day, ``YYYY-MM-DD``; the model trains only on earlier examples.
    :param max_epochs: most training epochs.
    :param machine_type: Compute Engine machine type, e.g. ``n1-standard-8``.
    :param container_uri: prebuilt TensorFlow training container that runs the package.
    :param base_output_uri: ``gs://`` folder for the job's own outputs and logs.
    :param labels: labels of the job; sanitized to Google Cloud's label rules.
    :param service_account: service account the job runs as; Vertex AI's default when None.
    """
    args = [
        "train",
        "--examples-query",
        examples_query_uri,
        "--query-parameters",
        json.dumps(dict(query_parameters), sort_keys=True),
        "--bigquery-project",
        bigquery_project,
        "--bigquery-location",
        bigquery_location,
        "--output-dir",
        output_dir,
        "--trained-before",
        trained_before,
        "--max-epochs",
        str(max_epochs),
    ]
    job_spec: dict[str, Any] = {
        "worker_pool_specs": [
            {
                "machine_spec": {"machine_type": machine_type},
                "replica_count": 1,
                "python_package_spec": {
                    "executor_image_uri": container_uri,
                    "package_uris": [package_uri],
                    "python_module": "textclf",
                    "args": args,
                },
            }
        ],
        "base_output_directory": {"output_uri_prefix": base_output_uri},
    }
    if service_account:
        job_spec["service_account"] = service_account
    return {"display_name": display_name, "labels": sanitize_labels(labels), "job_spec": job_spec}


def run_training_job(
    custom_job: Mapping[str, Any],
    *,
    project: str,
    region: str,
    gcp_conn_id: str = "google_cloud_default",
    impersonation_chain: str | list[str] | None = None,
    poll_interval: float = 30.0,
    on_job_created: Callable[[Callable[[], None]], None] | None = None,
    hook: Any = None,
) -> str:
    """Submit a custom job, wait until it ends and return its resource name.

    :param custom_job: the job, as :func:`build_custom_job_spec` returns it.
    :param project: project of the job.
    :param region: Vertex AI region, e.g. ``us-central1``.
    :param gcp_conn_id: Airflow connection whose credentials submit the job.
    :param impersonation_chain: service account to impersonate, or a chain of them.
    :param poll_interval: seconds between state checks.
    :param on_job_created: called once with a function that cancels the job, e.g. for ``on_kill``.
    :param hook: a ready ``CustomJobHook``; built from the connection when None.
    :raises RuntimeError: when the job ends in any state but succeeded.
    """
    if hook is None:
        from airflow.providers.google.cloud.hooks.vertex_ai.custom_job import CustomJobHook

        hook = CustomJobHook(gcp_conn_id=gcp_conn_id, impersonation_chain=impersonation_chain)

    created = hook.create_custom_job(project_id=project, region=region, custom_job=dict(custom_job))
    name = created.name
    job_id = name.rsplit("/", 1)[-1]
    log.info("Vertex AI custom job %s created in %s: %s", job_id, region, name)

    def cancel() -> None:
        log.info("Cancelling Vertex AI custom job %s", name)
        hook.cancel_custom_job(project_id=project, region=region, custom_job=job_id)

    if on_job_created is not None:
        on_job_created(cancel)

    last_state = None
    while True:
        job = hook.get_custom_job(project_id=project, region=region, custom_job=job_id)
        state = _state_name(job.state)
        if state != last_state:
            log.info("Vertex AI custom job %s is %s", job_id, state)
            last_state = state
        if state == SUCCEEDED_STATE:
            return name
        if state in FAILED_STATES:
            message = getattr(getattr(job, "error", None), "message", "") or "no error message"
            raise RuntimeError(
                f"Vertex AI custom job {name} ended in {state}: {message}. Read the job's logs in the "
                f"Vertex AI console (Training > Custom jobs, region {region}) and rerun the task."
            )
        time.sleep(poll_interval)


def _state_name(state: Any) -> str:
    return getattr(state, "name", None) or str(state)


def train_version_on_vertex(
    *,
    config: PipelineConfig,
    store: ModelStore,
    version: str,
    examples_sql: str,
    run_day: dt.date,
    labels: Mapping[str, str] | None = None,
    on_job_created: Callable[[Callable[[], None]], None] | None = None,
    hook: Any = None,
    storage_client: Any = None,
    poll_interval: float = 30.0,
) -> str:
    """Train model ``version`` on Vertex AI and publish it to the store; return the version URI.

    Uploads the package and the rendered examples query to ``vertex_staging_bucket``, runs the job,
    which writes to ``<store>/models/.staging-<version>-<id>``, then completes the version there.

    :param config: the pipeline configuration (project, location, ``vertex_*`` settings).
    :param store: the model store; it must be on Cloud Storage.
    :param version: the model version, ``YYYYMMDD`` of the run's day.
    :param examples_sql: the rendered training examples query with a ``@run_date`` parameter.
    :param run_day: the run's day; only examples before it are read.
    :param labels: labels of the job, e.g. the DAG and task ids.
    :param on_job_created: called with a function that cancels the job.
    :param hook: a ready ``CustomJobHook``; built from ``config.gcp_conn_id`` when None.
    :param storage_client: a ready ``google.cloud.storage.Client``; built when None.
    :param poll_interval: seconds between job state checks.
    """
    from textclf.store_gcs import GCSModelStore
    from textclf.training.bigquery_examples import parameters_to_json

    if not config.vertex_staging_bucket:
        raise ValueError(
            "`vertex_staging_bucket` is empty: set it to a gs:// bucket in the Vertex AI region to train on Vertex AI."
        )
    if not isinstance(store, GCSModelStore):
        raise ValueError(
            f"Training on Vertex AI needs a model store on Cloud Storage, but `store_uri` is {store.root!r}. "
            f"Set `store_uri` to gs://BUCKET/PREFIX."
        )

    run_id = f"{version}-{uuid.uuid4().hex[:12]}"
    staging_bucket, staging_prefix = parse_gcs_uri(config.vertex_staging_bucket)
    staging_name = f"{staging_prefix}/textclf/{run_id}" if staging_prefix else f"textclf/{run_id}"
    staging_uri = f"gs://{staging_bucket}/{staging_name}"
    if storage_client is None:
        from airflow.providers.google.cloud.hooks.gcs import GCSHook

        storage_client = GCSHook(gcp_conn_id=config.gcp_conn_id).get_conn()
    bucket = storage_client.bucket(staging_bucket)

    with tempfile.TemporaryDirectory(prefix="textclf-sdist-") as workdir:
        archive = build_source_distribution(Path(workdir))
        bucket.blob(f"{staging_name}/{archive.name}").upload_from_filename(str(archive))
    bucket.blob(f"{staging_name}/training_examples.sql").upload_from_string(examples_sql, content_type="text/plain")
    log.info("Uploaded the package and the examples query to %s", staging_uri)

    output_dir = f"{store.root}/models/.staging-{run_id}"
    custom_job = build_custom_job_spec(
        display_name=f"textclf-train-{run_id}",
        package_uri=f"{staging_uri}/{archive.name}",
        examples_query_uri=f"{staging_uri}/training_examples.sql",
        query_parameters=parameters_to_json({"run_date": run_day}),
        bigquery_project=config.project,
        bigquery_location=config.location,
        output_dir=output_dir,
        trained_before=run_day.isoformat(),
        max_epochs=config.max_epochs,
        machine_type=config.vertex_machine_type,
        container_uri=config.vertex_container_uri,
        base_output_uri=f"{staging_uri}/output",
        labels=labels,
        service_account=config.extra.get("vertex_service_account"),
    )
    run_training_job(
        custom_job,
        project=config.project,
        region=config.vertex_region,
        gcp_conn_id=config.gcp_conn_id,
        on_job_created=on_job_created,
        hook=hook,
        poll_interval=poll_interval,
    )
    return store.publish_remote(output_dir, version)
