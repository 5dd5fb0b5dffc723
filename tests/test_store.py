"""The local model store."""

from __future__ import annotations

import json

import pytest

from textclf.store import COMPLETE_MARKER, LocalModelStore, ModelStoreError, get_model_store


def _version_dir(tmp_path, name="v", content=b"graph"):
    folder = tmp_path / name
    (folder / "saved_model").mkdir(parents=True)
    (folder / "saved_model" / "saved_model.pb").write_bytes(content)
    (folder / "metrics.json").write_text(json.dumps({"classes": ["negative", "positive"]}))
    return folder


def test_publish_makes_version_complete(tmp_path):
    store = LocalModelStore(tmp_path / "store")

    uri = store.publish(_version_dir(tmp_path), "20141201")

    assert store.versions() == ["20141201"]
    assert (tmp_path / "store" / "models" / "20141201" / COMPLETE_MARKER).is_file()
    assert uri == str(tmp_path / "store" / "models" / "20141201")
    assert store.model_path("20141201") == str(tmp_path / "store" / "models" / "20141201" / "saved_model")


def test_incomplete_version_is_invisible(tmp_path):
    store = LocalModelStore(tmp_path / "store")
    half_written = tmp_path / "store" / "models" / "20141202" / "saved_model"
    half_written.mkdir(parents=True)

    assert store.versions() == []
    assert store.latest_version() is None
    with pytest.raises(ModelStoreError, match="missing or incomplete"):
        store.fetch("20141202", tmp_path)


def test_republish_replaces_version(tmp_path):
    store = LocalModelStore(tmp_path / "store")
    store.publish(_version_dir(tmp_path, "a", b"old"), "20141201")

    store.publish(_version_dir(tmp_path, "b", b"new"), "20141201")

    saved = tmp_path / "store" / "models" / "20141201" / "saved_model" / "saved_model.pb"
    assert saved.read_bytes() == b"new"
    assert [p.name for p in (tmp_path / "store" / "models").iterdir()] == ["20141201"]


def test_latest_version_is_strictly_before(tmp_path):
    store = LocalModelStore(tmp_path / "store")
    for version in ("20141129", "20141130", "20141201"):
        store.publish(_version_dir(tmp_path, version), version)

    assert store.latest_version(before="20141201") == "20141130"
    assert store.latest_version(before="20141129") is None
    assert store.latest_version() == "20141201"


def test_publish_requires_saved_model(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()

    with pytest.raises(ModelStoreError, match="saved_model.pb is missing"):
        LocalModelStore(tmp_path / "store").publish(folder, "20141201")


@pytest.mark.parametrize("version", ["2014-12-01", "latest", "../../etc", "201412011"])
def test_invalid_version_is_rejected(tmp_path, version):
    with pytest.raises(ValueError, match="Invalid model version"):
        LocalModelStore(tmp_path).model_path(version)


def test_report_replaces_previous_files(tmp_path):
    store = LocalModelStore(tmp_path / "store")
    store.write_report("2014-12-01", {"report.md": b"first", "old.png": b"x"})

    uri = store.write_report("2014-12-01", {"report.md": b"second"})

    assert sorted(p.name for p in (tmp_path / "store" / "reports" / "2014-12-01").iterdir()) == ["report.md"]
    assert (tmp_path / "store" / "reports" / "2014-12-01" / "report.md").read_bytes() == b"second"
    assert uri.endswith("reports/2014-12-01")


def test_get_model_store_picks_by_uri(tmp_path):
    assert isinstance(get_model_store(str(tmp_path)), LocalModelStore)
    assert isinstance(get_model_store(f"file://{tmp_path}"), LocalModelStore)
    with pytest.raises(ValueError, match="Unsupported model store URI"):
        get_model_store("s3://bucket/models")
