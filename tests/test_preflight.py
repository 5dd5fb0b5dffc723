"""Tests of the SavedModel checker in :mod:`textclf.preflight`."""

from __future__ import annotations

import subprocess
import sys

import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from textclf.preflight import check_saved_model, format_result, generate_texts  # noqa: E402
from textclf.training.export import export_saved_model  # noqa: E402
from textclf.training.model import (  # noqa: E402
    ModelSettings,
    build_classifier,
    build_end_to_end_model,
    build_vectorizer,
)

SETTINGS = ModelSettings(max_tokens=200, max_chars=60, sequence_length=64, embedding_dim=8, hidden_units=0)
CLASSES = ["neg", "pos"]
ADAPT_TEXTS = ["정말 최고의 영화", "bad movie 별로", "그냥 그래요 okay"]


def build_model(standardize=None) -> keras.Model:
    vectorizer = build_vectorizer(SETTINGS)
    if standardize is not None:
        vectorizer = keras.layers.TextVectorization(
            max_tokens=SETTINGS.max_tokens,
            standardize=standardize,
            split="character",
            output_mode="int",
            output_sequence_length=SETTINGS.sequence_length,
        )
    vectorizer.adapt(tf.constant(ADAPT_TEXTS))
    classifier = build_classifier(SETTINGS, len(CLASSES), vocabulary_size=vectorizer.vocabulary_size())
    return build_end_to_end_model(vectorizer, classifier, SETTINGS)


def save_module(path, input_spec: tf.TensorSpec, fn, *, signature_name: str = "serving_default") -> str:
    module = tf.Module()
    module.serve = tf.function(fn, input_signature=[input_spec])
    tf.saved_model.save(module, str(path), signatures={signature_name: module.serve})
    return str(path)


@pytest.fixture(scope="module")
def good_export(tmp_path_factory):
    path = tmp_path_factory.mktemp("good") / "saved_model"
    export_saved_model(build_model(), CLASSES, path)
    return str(path)


@pytest.fixture(scope="module")
def good_result(good_export):
    return check_saved_model(good_export)


def test_good_export_passes(good_result):
    assert good_result.problems == []
    assert good_result.ok


def test_good_export_signature_columns(good_result):
    assert good_result.inputs == [("text", "STRING")]
    assert good_result.outputs == [
        ("class_probabilities", "ARRAY<FLOAT64>"),
        ("predicted_label", "STRING"),
        ("predicted_probability", "FLOAT64"),
    ]


def test_good_export_measures_memory(good_result):
    assert good_result.batch_memory_bytes is not None
    assert 0 <= good_result.batch_memory_bytes < 250 * 2**20
    assert good_result.total_bytes > 0


def test_oversized_model_fails(good_export):
    result = check_saved_model(good_export, max_bytes=1000, measure_memory=False)

    assert len(result.problems) == 1
    assert "more than the 1,000 allowed" in result.problems[0]
    assert "Shrink the vocabulary" in result.problems[0]


def test_batch_memory_limit_fails(good_export):
    result = check_saved_model(good_export, max_batch_memory_bytes=1)

    assert len(result.problems) == 1
    assert "bytes of working memory, more than the 1 allowed" in result.problems[0]


def test_float_input_fails(tmp_path):
    path = save_module(
        tmp_path / "float_input",
        tf.TensorSpec([None], tf.float32, name="text"),
        lambda text: {"predicted_probability": tf.sigmoid(text)},
    )

    result = check_saved_model(path)

    assert result.inputs == [("text", "FLOAT64")]
    assert result.problems == [
        "The input 'text' is FLOAT64, but the pipeline sends text as STRING. "
        "Export with input_signature=[tf.TensorSpec([None], tf.string, name=...)]."
    ]
    assert result.batch_memory_bytes is None


@pytest.mark.parametrize("input_name", ["1text", "input-1"])
def test_invalid_input_name_fails(tmp_path, input_name):
    path = save_module(
        tmp_path / "bad_name",
        tf.TensorSpec([None], tf.string, name=input_name),
        lambda text: {"length": tf.strings.length(text)},
    )

    result = check_saved_model(path, measure_memory=False)

    assert result.inputs == [(input_name, "STRING")]
    assert len(result.problems) == 1
    assert result.problems[0].startswith(f"Invalid input name {input_name!r}")
    assert "valid BigQuery column name" in result.problems[0]


def test_ragged_output_fails(tmp_path):
    path = save_module(
        tmp_path / "ragged",
        tf.TensorSpec([None], tf.string, name="text"),
        lambda text: {"tokens": tf.strings.split(text), "length": tf.strings.length(text)},
    )

    result = check_saved_model(path, measure_memory=False)

    assert ("length", "INT64") in result.outputs
    assert ("tokens", None) in result.outputs
    assert len(result.problems) == 1
    assert "The output 'tokens' is a composite tensor" in result.problems[0]
    assert ".to_tensor()" in result.problems[0]


def test_unsupported_dtype_fails(tmp_path):
    path = save_module(
        tmp_path / "complex",
        tf.TensorSpec([None], tf.string, name="text"),
        lambda text: {"spectrum": tf.complex(tf.cast(tf.strings.length(text), tf.float32), 0.0)},
    )

    result = check_saved_model(path, measure_memory=False)

    assert result.outputs == [("spectrum", None)]
    assert result.problems == [
        "The output 'spectrum' has dtype complex64, which has no BigQuery type. "
        "Cast it to tf.string, tf.bool, an integer or a float type."
    ]


def test_python_standardize_fails(tmp_path):
    def python_lower(texts):
        lowered = tf.py_function(lambda batch: tf.strings.lower(batch), [texts], tf.string)
        lowered.set_shape(texts.shape)
        return lowered

    path = tmp_path / "py_function"
    export_saved_model(build_model(standardize=python_lower), CLASSES, path)

    result = check_saved_model(str(path))

    assert len(result.problems) == 1
    assert result.problems[0].startswith("The graph calls Python through EagerPyFunc")
    assert "BigQuery ML cannot run" in result.problems[0]
    assert result.batch_memory_bytes is None


def test_custom_op_fails(tmp_path):
    from tensorflow.core.protobuf import saved_model_pb2

    path = save_module(
        tmp_path / "custom_op",
        tf.TensorSpec([None], tf.string, name="text"),
        lambda text: {"length": tf.strings.length(text)},
    )
    # Rename the op in the stored graph, as a model built with an extension library would show.
    saved_model = saved_model_pb2.SavedModel()
    pb_path = f"{path}/saved_model.pb"
    with open(pb_path, "rb") as handle:
        saved_model.ParseFromString(handle.read())
    for function in saved_model.meta_graphs[0].graph_def.library.function:
        for node in function.node_def:
            if node.op == "StringLength":
                node.op = "SentencepieceTokenizeOp"
    with open(pb_path, "wb") as handle:
        handle.write(saved_model.SerializeToString())

    result = check_saved_model(path, measure_memory=False)

    assert result.problems == [
        "The graph uses ops outside core TensorFlow: SentencepieceTokenizeOp. BigQuery ML supports only core ops; "
        "rebuild the model without the library that defines them (e.g. tensorflow_text)."
    ]


def test_missing_serving_default_fails(tmp_path):
    path = save_module(
        tmp_path / "other_signature",
        tf.TensorSpec([None], tf.string, name="text"),
        lambda text: {"length": tf.strings.length(text)},
        signature_name="predict",
    )

    result = check_saved_model(path, measure_memory=False)

    assert len(result.problems) == 1
    assert result.problems[0].startswith("The SavedModel has no 'serving_default' signature")


def test_not_a_saved_model_fails(tmp_path):
    result = check_saved_model(str(tmp_path), measure_memory=False)

    assert len(result.problems) == 1
    assert "is not a SavedModel folder" in result.problems[0]


def test_expected_input_name_mismatch_fails(good_export):
    result = check_saved_model(good_export, input_name="review_text", measure_memory=False)

    assert result.problems == ["The input is named 'text', but 'review_text' was expected. Export with input_name='review_text'."]


def test_format_result_lists_columns(good_result):
    report = format_result(good_result)

    assert "  input  text STRING" in report
    assert "  output class_probabilities ARRAY<FLOAT64>" in report
    assert report.endswith("OK: the model can be imported into BigQuery ML.")


def test_command_exits_1_on_problems(good_export):
    completed = subprocess.run(
        [sys.executable, "-m", "textclf", "check-model", good_export, "--max-bytes", "1000", "--skip-memory"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert completed.returncode == 1
    assert "  input  text STRING" in completed.stdout
    assert "  output predicted_label STRING" in completed.stdout
    assert "1 problem(s):" in completed.stdout


def test_generated_texts_have_requested_lengths():
    texts = generate_texts(50, 1000, 1000)

    assert len(texts) == 50
    assert all(len(text) == 1000 for text in texts)
    assert any("\uac00" <= character <= "\ud7a3" for character in texts[0])


def test_invalid_batch_rows_is_rejected(good_export):
    with pytest.raises(ValueError, match="`batch_rows` must be a positive integer. Received: batch_rows=0"):
        check_saved_model(good_export, batch_rows=0)
