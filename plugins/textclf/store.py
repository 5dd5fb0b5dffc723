"""The model store: versioned SavedModels, their metrics and the daily reports.

Layout under the store root, the same on a local disk and on Cloud Storage::

    models/<version>/saved_model/...   the SavedModel that BigQuery ML imports
    models/<version>/metrics.json      training metrics, class order included
    models/<version>/_COMPLETE         written last: only versions with it are ever imported
    reports/<YYYY-MM-DD>/...           the rendered report of a day

A version is the run day the model was trained for, as ``YYYYMMDD``: it saw only examples dated
strictly before that day.
"""

from __future__ import annotations

import abc
import logging
import os
import re
import shutil
import uuid
from pathlib import Path

log = logging.getLogger(__name__)

COMPLETE_MARKER = "_COMPLETE"
SAVED_MODEL_DIR = "saved_model"
METRICS_FILE = "metrics.json"
_VERSION_RE = re.compile(r"^\d{8}$")


class ModelStoreError(RuntimeError):
    """Raised when a model version is missing or incomplete; the message names the location."""


def validate_version(version: str) -> str:
    """Return ``version`` if it has the ``YYYYMMDD`` form, else raise ``ValueError``."""
    if not isinstance(version, str) or not _VERSION_RE.fullmatch(version):
        raise ValueError(f"Invalid model version {version!r}: expected the run day as YYYYMMDD, e.g. '20141201'.")
    return version


class ModelStore(abc.ABC):
    """Versioned storage for SavedModels and reports."""

    root: str

    @abc.abstractmethod
    def publish(self, local_version_dir: Path, version: str) -> str:
        """Copy a local version folder (``saved_model/`` and ``metrics.json``) into the store.

        The version becomes visible to :meth:`latest_version` and :meth:`is_complete` only once
        every file is in place, so a half-written version is never imported. Publishing a version
        again replaces it.

        :return: the URI of the version folder.
        """

    @abc.abstractmethod
    def versions(self) -> list[str]:
        """Return the complete versions in the store, oldest first."""

    @abc.abstractmethod
    def fetch(self, version: str, local_dir: Path) -> Path:
        """Copy a complete version into ``local_dir`` and return the local version folder."""

    @abc.abstractmethod
    def write_report(self, run_day: str, files: dict[str, bytes]) -> str:
        """Write the report files of a day, replacing the day's earlier report, and return its URI."""

    @abc.abstractmethod
    def version_uri(self, version: str) -> str:
        """Return the URI of a version folder."""

    @abc.abstractmethod
    def model_path(self, version: str) -> str:
        """Return the ``model_path`` that ``CREATE MODEL`` takes for a version."""

    def is_complete(self, version: str) -> bool:
        return validate_version(version) in self.versions()

    def latest_version(self, before: str | None = None) -> str | None:
        """Return the newest complete version strictly before ``before`` (``YYYYMMDD``), or None."""
        candidates = [v for v in self.versions() if before is None or v < before]
        return candidates[-1] if candidates else None


class LocalModelStore(ModelStore):
    """A model store in a local folder; versions appear through an atomic directory rename."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = str(Path(root).expanduser().resolve())

    @property
    def _models(self) -> Path:
        return Path(self.root) / "models"

    def version_uri(self, version: str) -> str:
        return str(self._models / validate_version(version))

    def model_path(self, version: str) -> str:
        return str(self._models / validate_version(version) / SAVED_MODEL_DIR)

    def publish(self, local_version_dir: Path, version: str) -> str:
        validate_version(version)
        require_version_files(Path(local_version_dir))
        self._models.mkdir(parents=True, exist_ok=True)

        # Copy into a hidden folder beside the target, mark it complete, then swap it in with
        # rename, which is atomic on one file system: readers see the old version or the new one.
        staging = self._models / f".staging-{version}-{uuid.uuid4().hex}"
        shutil.copytree(local_version_dir, staging)
        _fsync_tree(staging)
        (staging / COMPLETE_MARKER).write_text(version + "\n", encoding="utf-8")
        _fsync_tree(staging)

        target = self._models / version
        retired = None
        if target.exists():
            retired = self._models / f".retired-{version}-{uuid.uuid4().hex}"
            os.rename(target, retired)
        os.rename(staging, target)
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)
        log.info("Published model version %s to %s", version, target)
        return str(target)

    def versions(self) -> list[str]:
        if not self._models.is_dir():
            return []
        return sorted(
            entry.name
            for entry in self._models.iterdir()
            if _VERSION_RE.fullmatch(entry.name) and (entry / COMPLETE_MARKER).is_file()
        )

    def fetch(self, version: str, local_dir: Path) -> Path:
        if not self.is_complete(version):
            raise ModelStoreError(
                f"Model version {version} is missing or incomplete in {self._models}: train it first "
                f"(run the train task for that day)."
            )
        return self._models / version

    def write_report(self, run_day: str, files: dict[str, bytes]) -> str:
        reports = Path(self.root) / "reports"
        reports.mkdir(parents=True, exist_ok=True)
        staging = reports / f".staging-{run_day}-{uuid.uuid4().hex}"
        staging.mkdir()
        for name, content in files.items():
            (staging / name).write_bytes(content)
        target = reports / run_day
        retired = None
        if target.exists():
            retired = reports / f".retired-{run_day}-{uuid.uuid4().hex}"
            os.rename(target, retired)
        os.rename(staging, target)
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)
        return str(target)


def require_version_files(local_version_dir: Path) -> None:
    """Raise ``ModelStoreError`` unless a local version folder has its SavedModel and metrics."""
    saved_model = local_version_dir / SAVED_MODEL_DIR / "saved_model.pb"
    metrics = local_version_dir / METRICS_FILE
    for required in (saved_model, metrics):
        if not required.is_file():
            raise ModelStoreError(f"Cannot publish {local_version_dir}: {required} is missing. Export the model again.")


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def get_model_store(uri: str, *, gcp_conn_id: str = "google_cloud_default") -> ModelStore:
    """Return the model store at ``uri``: a ``gs://bucket/prefix`` URI or a local folder."""
    if uri.startswith("gs://"):
        from textclf.store_gcs import GCSModelStore

        return GCSModelStore(uri, gcp_conn_id=gcp_conn_id)
    if "://" in uri and not uri.startswith("file://"):
        raise ValueError(f"Unsupported model store URI {uri!r}: use a local folder or gs://bucket/prefix.")
    return LocalModelStore(uri.removeprefix("file://"))
