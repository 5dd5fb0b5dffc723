"""The model store on Cloud Storage, with the same layout as the local store.

Cloud Storage has no atomic rename of a folder, so completeness rests on the ``_COMPLETE`` marker:
publishing deletes a version's marker first, uploads every file, removes files the new version no
longer has, and writes the marker last. Readers list only versions whose marker exists, so a
half-uploaded version is never imported.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from textclf.store import (
    COMPLETE_MARKER,
    METRICS_FILE,
    SAVED_MODEL_DIR,
    ModelStore,
    ModelStoreError,
    require_version_files,
    validate_version,
)

log = logging.getLogger(__name__)

# Bucket names: 3-222 characters of lowercase letters, digits, dots, underscores and dashes,
# starting and ending with a letter or digit.
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
_VERSION_MARKER_RE = re.compile(r"^models/(\d{8})/" + re.escape(COMPLETE_MARKER) + "$")


def parse_gcs_uri(uri: str) -> tuple[str, str]:
    """Split ``gs://bucket/some/prefix`` into the bucket and the prefix without slashes at either end.

    :param uri: a Cloud Storage URI.
    """
    if not isinstance(uri, str) or not uri.startswith("gs://"):
        raise ValueError(f"Invalid Cloud Storage URI {uri!r}: expected gs://BUCKET or gs://BUCKET/PREFIX.")
    bucket, _, prefix = uri.removeprefix("gs://").partition("/")
    if not _BUCKET_RE.fullmatch(bucket):
        raise ValueError(
            f"Invalid bucket name {bucket!r} in {uri!r}: expected 3-222 lowercase letters, digits, '.', '_' or '-'."
        )
    return bucket, prefix.strip("/")


class GCSModelStore(ModelStore):
    """A model store under ``gs://bucket/prefix``.

    :param uri: the store root, ``gs://bucket`` or ``gs://bucket/prefix``.
    :param gcp_conn_id: Airflow connection whose credentials the storage client uses.
    :param client: a ready ``google.cloud.storage.Client``; built from the connection when None.
    """

    def __init__(self, uri: str, *, gcp_conn_id: str = "google_cloud_default", client: Any = None) -> None:
        self.bucket_name, self.prefix = parse_gcs_uri(uri)
        self.root = f"gs://{self.bucket_name}/{self.prefix}".rstrip("/")
        self.gcp_conn_id = gcp_conn_id
        self._client = client

    @property
    def client(self) -> Any:
        """The Cloud Storage client, built from the Airflow connection on first use."""
        if self._client is None:
            from airflow.providers.google.cloud.hooks.gcs import GCSHook

            self._client = GCSHook(gcp_conn_id=self.gcp_conn_id).get_conn()
        return self._client

    def _name(self, relative: str) -> str:
        """Return the object name of a path relative to the store root."""
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def _version_name(self, version: str) -> str:
        return self._name(f"models/{validate_version(version)}")

    # Reading

    def version_uri(self, version: str) -> str:
        return f"gs://{self.bucket_name}/{self._version_name(version)}"

    def model_path(self, version: str) -> str:
        return f"{self.version_uri(version)}/{SAVED_MODEL_DIR}/*"

    def versions(self) -> list[str]:
        # Listing only the markers keeps this one short request, however many files the versions have.
        blobs = self.client.list_blobs(
            self.bucket_name, prefix=self._name("models/"), match_glob=self._name(f"models/*/{COMPLETE_MARKER}")
        )
        root = f"{self.prefix}/" if self.prefix else ""
        versions = []
        for blob in blobs:
            match = _VERSION_MARKER_RE.fullmatch(blob.name.removeprefix(root))
            if match:
                versions.append(match.group(1))
        return sorted(versions)

    def fetch(self, version: str, local_dir: Path) -> Path:
        if not self.is_complete(version):
            raise ModelStoreError(
                f"Model version {version} is missing or incomplete in {self.root}/models: train it first "
                f"(run the train task for that day)."
            )
        version_name = self._version_name(version)
        target = Path(local_dir) / version
        count = 0
        for blob in self.client.list_blobs(self.bucket_name, prefix=f"{version_name}/"):
            relative = blob.name.removeprefix(f"{version_name}/")
            if not relative or relative.endswith("/"):
                continue
            path = target / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            blob.download_to_filename(str(path))
            count += 1
        log.info("Downloaded model version %s (%s files) from %s to %s", version, count, self.version_uri(version), target)
        return target

    # Writing

    def publish(self, local_version_dir: Path, version: str) -> str:
        validate_version(version)
        local_version_dir = Path(local_version_dir)
        require_version_files(local_version_dir)
        version_name = self._version_name(version)
        bucket = self.client.bucket(self.bucket_name)

        # The marker goes first, so no reader imports the version while its files change.
        self._delete_marker(version)
        uploaded = set()
        files = sorted(path for path in local_version_dir.rglob("*") if path.is_file() and path.name != COMPLETE_MARKER)
        for path in files:
            name = f"{version_name}/{path.relative_to(local_version_dir).as_posix()}"
            bucket.blob(name).upload_from_filename(str(path))
            uploaded.add(name)
        self._delete_stale(version_name, keep=uploaded)
        bucket.blob(f"{version_name}/{COMPLETE_MARKER}").upload_from_string(version + "\n", content_type="text/plain")

        log.info("Published model version %s (%s files) to %s", version, len(uploaded), self.version_uri(version))
        return self.version_uri(version)

    def publish_remote(self, staging_prefix: str, version: str) -> str:
        """Complete a version that a remote training job wrote to ``staging_prefix``.

        Copies the staged objects server-side to the version folder, writes the marker, then deletes
        the staged objects.

        :param staging_prefix: ``gs://`` URI of the folder with ``saved_model/`` and ``metrics.json``.
        :param version: the model version, ``YYYYMMDD``.
        """
        validate_version(version)
        staging_bucket_name, staging_name = parse_gcs_uri(staging_prefix)
        staging_bucket = self.client.bucket(staging_bucket_name)
        staged = [
            blob
            for blob in self.client.list_blobs(staging_bucket_name, prefix=f"{staging_name}/")
            if not blob.name.endswith("/")
        ]
        relative_names = {blob.name.removeprefix(f"{staging_name}/") for blob in staged}
        for required in (f"{SAVED_MODEL_DIR}/saved_model.pb", METRICS_FILE):
            if required not in relative_names:
                raise ModelStoreError(
                    f"Cannot publish {staging_prefix}: {staging_prefix.rstrip('/')}/{required} is missing. "
                    f"Check the training job's logs; it exports the model there when it succeeds."
                )

        version_name = self._version_name(version)
        bucket = self.client.bucket(self.bucket_name)
        self._delete_marker(version)
        copied = set()
        for blob in staged:
            relative = blob.name.removeprefix(f"{staging_name}/")
            if relative == COMPLETE_MARKER:
                continue
            name = f"{version_name}/{relative}"
            # NOTE: copy_blob is one rewrite call, enough for SavedModels of a few hundred MB. Larger
            # objects across locations or storage classes may need blob.rewrite() with its token.
            staging_bucket.copy_blob(blob, bucket, name)
            copied.add(name)
        self._delete_stale(version_name, keep=copied)
        bucket.blob(f"{version_name}/{COMPLETE_MARKER}").upload_from_string(version + "\n", content_type="text/plain")
        log.info("Published model version %s from %s to %s", version, staging_prefix, self.version_uri(version))

        for blob in staged:
            blob.delete()
        log.info("Deleted %s staged objects under %s", len(staged), staging_prefix)
        return self.version_uri(version)

    def write_report(self, run_day: str, files: dict[str, bytes]) -> str:
        """Upload the report files of a day to ``reports/<run_day>/``, replacing the day's earlier report.

        Files of an earlier report that the new one lacks are deleted after the upload. A reader
        during the upload may see old and new files side by side, which is harmless for a report.
        """
        report_name = self._name(f"reports/{run_day}")
        bucket = self.client.bucket(self.bucket_name)
        uploaded = set()
        for file_name, content in sorted(files.items()):
            name = f"{report_name}/{file_name}"
            bucket.blob(name).upload_from_string(content)
            uploaded.add(name)
        self._delete_stale(report_name, keep=uploaded)
        uri = f"gs://{self.bucket_name}/{report_name}"
        log.info("Wrote report of %s (%s files) to %s", run_day, len(uploaded), uri)
        return uri

    def _delete_marker(self, version: str) -> None:
        from google.api_core.exceptions import NotFound

        marker = self.client.bucket(self.bucket_name).blob(f"{self._version_name(version)}/{COMPLETE_MARKER}")
        try:
            marker.delete()
        except NotFound:
            return
        log.info("Marked model version %s incomplete while it is replaced", version)

    def _delete_stale(self, folder_name: str, *, keep: set[str]) -> None:
        for blob in self.client.list_blobs(self.bucket_name, prefix=f"{folder_name}/"):
            if blob.name not in keep and not blob.name.endswith(f"/{COMPLETE_MARKER}"):
                blob.delete()
