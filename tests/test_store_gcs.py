"""Tests of GCSModelStore against a fake Cloud Storage client."""

from __future__ import annotations

from pathlib import Path

import pytest

from fakes_gcp import FakeStorageClient
from textclf.store import ModelStoreError, get_model_store
from textclf.store_gcs import GCSModelStore, parse_gcs_uri

BUCKET = "textclf-models"


def make_version_dir(root: Path, *, variables: bytes = b"weights") -> Path:
    version_dir = root / "export"
    (version_dir / "saved_model" / "variables").mkdir(parents=True)
    (version_dir / "saved_model" / "saved_model.pb").write_bytes(b"graph")
    (version_dir / "saved_model" / "variables" / "variables.data-00000-of-00001").write_bytes(variables)
    (version_dir / "metrics.json").write_text('{"accuracy": 0.9}')
    return version_dir


@pytest.fixture
def client() -> FakeStorageClient:
    return FakeStorageClient()


@pytest.fixture
def store(client: FakeStorageClient) -> GCSModelStore:
    return GCSModelStore(f"gs://{BUCKET}/store", client=client)


def test_publish_uploads_marker_last(store, client, tmp_path):
    uri = store.publish(make_version_dir(tmp_path), "20141201")

    assert uri == f"gs://{BUCKET}/store/models/20141201"
    assert client.operations == [
        ("upload", f"gs://{BUCKET}/store/models/20141201/metrics.json"),
        ("upload", f"gs://{BUCKET}/store/models/20141201/saved_model/saved_model.pb"),
        ("upload", f"gs://{BUCKET}/store/models/20141201/saved_model/variables/variables.data-00000-of-00001"),
        ("upload", f"gs://{BUCKET}/store/models/20141201/_COMPLETE"),
    ]
    assert client.objects[(BUCKET, "store/models/20141201/_COMPLETE")] == b"20141201\n"


def test_republish_deletes_marker_first_and_stale_files(store, client, tmp_path):
    store.publish(make_version_dir(tmp_path / "old"), "20141201")
    client.objects[(BUCKET, "store/models/20141201/saved_model/assets/old_vocab.txt")] = b"old"
    client.operations.clear()

    store.publish(make_version_dir(tmp_path / "new", variables=b"new weights"), "20141201")

    assert client.operations[0] == ("delete", f"gs://{BUCKET}/store/models/20141201/_COMPLETE")
    assert client.operations[-2] == ("delete", f"gs://{BUCKET}/store/models/20141201/saved_model/assets/old_vocab.txt")
    assert client.operations[-1] == ("upload", f"gs://{BUCKET}/store/models/20141201/_COMPLETE")
    assert client.objects[(BUCKET, "store/models/20141201/saved_model/variables/variables.data-00000-of-00001")] == b"new weights"


def test_publish_rejects_folder_without_saved_model(store, client, tmp_path):
    (tmp_path / "metrics.json").write_text("{}")

    with pytest.raises(ModelStoreError, match="saved_model.pb is missing"):
        store.publish(tmp_path, "20141201")

    assert client.operations == []


def test_incomplete_versions_invisible(store, client, tmp_path):
    store.publish(make_version_dir(tmp_path), "20141201")
    client.objects[(BUCKET, "store/models/20141202/saved_model/saved_model.pb")] = b"half uploaded"
    client.objects[(BUCKET, "store/models/.staging-20141203-abc/_COMPLETE")] = b"20141203\n"

    assert store.versions() == ["20141201"]
    assert store.is_complete("20141202") is False
    assert store.latest_version(before="20141203") == "20141201"


def test_versions_lists_only_markers(store, client):
    store.versions()

    assert client.list_requests == [
        {"bucket": BUCKET, "prefix": "store/models/", "match_glob": "store/models/*/_COMPLETE"}
    ]


def test_model_path_points_at_saved_model(store):
    assert store.model_path("20141201") == f"gs://{BUCKET}/store/models/20141201/saved_model/*"


def test_model_path_without_prefix(client):
    store = GCSModelStore(f"gs://{BUCKET}", client=client)

    assert store.root == f"gs://{BUCKET}"
    assert store.model_path("20141201") == f"gs://{BUCKET}/models/20141201/saved_model/*"


def test_fetch_downloads_complete_version(store, tmp_path):
    store.publish(make_version_dir(tmp_path / "src"), "20141201")

    local = store.fetch("20141201", tmp_path / "dst")

    assert local == tmp_path / "dst" / "20141201"
    assert (local / "saved_model" / "saved_model.pb").read_bytes() == b"graph"
    assert (local / "saved_model" / "variables" / "variables.data-00000-of-00001").read_bytes() == b"weights"
    assert (local / "metrics.json").read_text() == '{"accuracy": 0.9}'


def test_fetch_rejects_incomplete_version(store, client, tmp_path):
    client.objects[(BUCKET, "store/models/20141201/saved_model/saved_model.pb")] = b"graph"

    with pytest.raises(ModelStoreError, match="20141201 is missing or incomplete"):
        store.fetch("20141201", tmp_path)


def test_write_report_replaces_day(store, client):
    client.objects[(BUCKET, "store/reports/2014-12-01/old.png")] = b"old"

    uri = store.write_report("2014-12-01", {"report.html": b"<html>", "confusion.png": b"png"})

    assert uri == f"gs://{BUCKET}/store/reports/2014-12-01"
    assert client.operations == [
        ("upload", f"gs://{BUCKET}/store/reports/2014-12-01/confusion.png"),
        ("upload", f"gs://{BUCKET}/store/reports/2014-12-01/report.html"),
        ("delete", f"gs://{BUCKET}/store/reports/2014-12-01/old.png"),
    ]
    assert client.objects[(BUCKET, "store/reports/2014-12-01/report.html")] == b"<html>"


def test_publish_remote_copies_then_marks_then_cleans(store, client):
    staging = "store/models/.staging-20141201-abc"
    client.objects[(BUCKET, f"{staging}/metrics.json")] = b"{}"
    client.objects[(BUCKET, f"{staging}/saved_model/saved_model.pb")] = b"graph"

    uri = store.publish_remote(f"gs://{BUCKET}/{staging}", "20141201")

    assert uri == f"gs://{BUCKET}/store/models/20141201"
    assert client.operations == [
        ("copy", f"gs://{BUCKET}/{staging}/metrics.json", f"gs://{BUCKET}/store/models/20141201/metrics.json"),
        (
            "copy",
            f"gs://{BUCKET}/{staging}/saved_model/saved_model.pb",
            f"gs://{BUCKET}/store/models/20141201/saved_model/saved_model.pb",
        ),
        ("upload", f"gs://{BUCKET}/store/models/20141201/_COMPLETE"),
        ("delete", f"gs://{BUCKET}/{staging}/metrics.json"),
        ("delete", f"gs://{BUCKET}/{staging}/saved_model/saved_model.pb"),
    ]
    assert store.versions() == ["20141201"]


def test_publish_remote_rejects_incomplete_staging(store, client):
    client.objects[(BUCKET, "store/models/.staging-x/metrics.json")] = b"{}"

    with pytest.raises(ModelStoreError, match="saved_model/saved_model.pb is missing"):
        store.publish_remote(f"gs://{BUCKET}/store/models/.staging-x", "20141201")

    assert client.operations == []


@pytest.mark.parametrize("uri", ["s3://bucket/x", "gs://B/x", "gs://a/x", "bucket/x"])
def test_parse_rejects_invalid_uri(uri):
    with pytest.raises(ValueError, match="Invalid"):
        parse_gcs_uri(uri)


def test_parse_strips_slashes():
    assert parse_gcs_uri("gs://textclf-models/store/") == ("textclf-models", "store")


def test_get_model_store_picks_gcs_for_gs_uri():
    store = get_model_store("gs://textclf-models/store", gcp_conn_id="textclf_warehouse")

    assert isinstance(store, GCSModelStore)
    assert store.gcp_conn_id == "textclf_warehouse"
    assert store.root == "gs://textclf-models/store"
