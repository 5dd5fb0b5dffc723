"""Tests of training, export and ``metrics.json`` in :mod:`textclf.training`."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

tf = pytest.importorskip("tensorflow")

from textclf.training.export import OUTPUT_NAMES, predict_in_memory  # noqa: E402
from textclf.training.model import ModelSettings, build_classifier  # noqa: E402
from textclf.training.train import (  # noqa: E402
    LazyAdam,
    add_logit_offsets,
    evaluate_predictions,
    fit_logit_offsets,
    read_labelled_examples,
    train_and_export,
    train_model,
    validation_start_day,
    write_model_version,
)

SEED = 1234
TINY_SETTINGS = ModelSettings(max_tokens=400, max_chars=60, sequence_length=80, embedding_dim=8, hidden_units=0, dropout=0.0)
FIRST_DAY = dt.date(2014, 1, 1)
DAYS = 10

# The i-th class of an examples table gets the i-th word list, so a tiny model separates the
# classes in a few epochs.
CLASS_WORDS = {
    "neg": ["최악", "별로", "지루", "bad", "awful"],
    "pos": ["최고", "감동", "재밌", "great", "good"],
    "mid": ["보통", "그냥", "무난", "okay", "fine"],
}
ROUND_TRIP_TEXTS = [
    "정말 최고의 영화 감동",
    "This movie was awful and boring",
    "😀👍🎬 최고!!",
    "",
    "   ",
    "가나다라마바사" * 143 + "x",
    "mixed 한국어 and English 123",
]


def make_examples(class_names: list, rows: int = 300, *, seed: int = SEED) -> pa.Table:
    rng = np.random.default_rng(seed)
    word_lists = list(CLASS_WORDS.values())
    texts, labels, dates = [], [], []
    for row in range(rows):
        index = row % len(class_names)
        words = rng.choice(word_lists[index], size=3).tolist() + ["영화", "movie"]
        texts.append(" ".join(rng.permutation(words)))
        labels.append(class_names[index])
        dates.append(FIRST_DAY + dt.timedelta(days=row * DAYS // rows))
    label_type = pa.int64() if isinstance(class_names[0], int) else pa.string()
    return pa.table(
        {
            "text": pa.array(texts, pa.string()),
            "label": pa.array(labels, label_type),
            "example_date": pa.array(dates, pa.date32()),
        }
    )


@pytest.fixture(scope="module")
def two_class_version(tmp_path_factory):
    # Integer labels, plus rows with a NULL text and a NULL label.
    examples = make_examples([0, 1])
    extra = pa.table(
        {
            "text": pa.array([None, "최고 great", "label missing"], pa.string()),
            "label": pa.array([0, None, None], pa.int64()),
            "example_date": pa.array([FIRST_DAY] * 3, pa.date32()),
        }
    )
    examples = pa.concat_tables([examples, extra])
    result = train_model(examples, max_epochs=3, seed=SEED, settings=TINY_SETTINGS, batch_size=32)
    output_dir = tmp_path_factory.mktemp("two_class")
    metrics = write_model_version(result, output_dir)
    return result, output_dir, metrics


@pytest.fixture(scope="module")
def three_class_version(tmp_path_factory):
    examples = make_examples(["neg", "pos", "mid"], rows=360)
    result = train_model(examples, max_epochs=3, seed=SEED, settings=TINY_SETTINGS, batch_size=32)
    output_dir = tmp_path_factory.mktemp("three_class")
    metrics = write_model_version(result, output_dir, input_name="review_text")
    return result, output_dir, metrics


def predict_in_fresh_process(saved_model_dir, input_name: str, batches: list[list[str]]) -> list[dict]:
    script = r"""
import json, sys
import tensorflow as tf
request = json.loads(sys.stdin.read())
serve = tf.saved_model.load(request["path"]).signatures["serving_default"]
replies = []
for texts in request["batches"]:
    outputs = serve(**{request["input_name"]: tf.constant(texts, dtype=tf.string)})
    replies.append({
        "predicted_label": [label.decode() for label in outputs["predicted_label"].numpy()],
        "predicted_probability": outputs["predicted_probability"].numpy().tolist(),
        "class_probabilities": outputs["class_probabilities"].numpy().tolist(),
    })
print(json.dumps(replies))
"""
    request = {"path": str(saved_model_dir), "input_name": input_name, "batches": batches}
    completed = subprocess.run(
        [sys.executable, "-c", script], input=json.dumps(request), capture_output=True, text=True, timeout=120, check=False
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("version", ["two_class_version", "three_class_version"])
def test_round_trip_in_fresh_process(version, request):
    result, output_dir, metrics = request.getfixturevalue(version)
    batches = [[ROUND_TRIP_TEXTS[0]], ROUND_TRIP_TEXTS]

    replies = predict_in_fresh_process(output_dir / "saved_model", metrics["input_name"], batches)

    for texts, reply in zip(batches, replies):
        expected = predict_in_memory(result.model, result.classes, texts)
        loaded_probabilities = np.array(reply["class_probabilities"], dtype=np.float32)
        assert loaded_probabilities.shape == (len(texts), len(result.classes))
        assert np.max(np.abs(loaded_probabilities - expected["class_probabilities"])) <= 1e-6
        assert np.max(np.abs(np.array(reply["predicted_probability"], dtype=np.float32) - expected["predicted_probability"])) <= 1e-6
        assert reply["predicted_label"] == [label.decode() for label in expected["predicted_label"]]
        assert np.all(np.isfinite(loaded_probabilities))


def test_signature_names_and_dtypes(three_class_version):
    _, output_dir, _ = three_class_version

    serve = tf.saved_model.load(str(output_dir / "saved_model")).signatures["serving_default"]
    args, kwargs = serve.structured_input_signature
    outputs = serve.structured_outputs

    assert args == ()
    assert list(kwargs) == ["review_text"]
    assert kwargs["review_text"].dtype == tf.string
    assert kwargs["review_text"].shape.as_list() == [None]
    assert sorted(outputs) == sorted(OUTPUT_NAMES)
    assert outputs["predicted_label"].dtype == tf.string
    assert outputs["predicted_label"].shape.as_list() == [None]
    assert outputs["predicted_probability"].dtype == tf.float32
    assert outputs["predicted_probability"].shape.as_list() == [None]
    assert outputs["class_probabilities"].dtype == tf.float32
    assert outputs["class_probabilities"].shape.as_list() == [None, 3]


def test_export_stores_each_weight_once(two_class_version):
    result, output_dir, _ = two_class_version

    stored = tf.train.list_variables(str(output_dir / "saved_model" / "variables" / "variables"))
    stored_shapes = sorted(tuple(shape) for name, shape in stored if name.endswith("VARIABLE_VALUE"))
    model_shapes = sorted(tuple(weight.shape) for weight in result.model.weights)

    assert stored_shapes == model_shapes
    assert not any("optimizer" in name for name, _ in stored)


def test_model_learns_synthetic_classes(three_class_version):
    result, _, metrics = three_class_version

    predicted = predict_in_memory(result.model, result.classes, ["최악 별로 bad", "최고 감동 great", "보통 그냥 okay"])

    assert [label.decode() for label in predicted["predicted_label"]] == ["neg", "pos", "mid"]
    assert metrics["accuracy"] >= 0.9


def test_metrics_json_two_classes(two_class_version):
    _, output_dir, returned = two_class_version

    metrics = json.loads((output_dir / "metrics.json").read_text(encoding="utf-8"))

    assert metrics == returned
    assert metrics["classes"] == ["0", "1"]
    assert metrics["example_counts"]["dropped_null_labels"] == 2
    assert metrics["example_counts"]["dropped_null_dates"] == 0
    assert metrics["example_counts"]["train"] + metrics["example_counts"]["validation"] == 301
    # 10% of 301 is 30.1 rows, more than the last day's 30, so the last two days are held out.
    assert metrics["example_counts"]["validation"] == 60
    assert metrics["validation_start_date"] == "2014-01-09"
    assert metrics["latest_example_date"] == "2014-01-10"
    assert metrics["trained_before"] == "2014-01-11"
    assert metrics["input_name"] == "text"
    assert metrics["output_names"] == ["predicted_label", "predicted_probability", "class_probabilities"]
    assert metrics["tensorflow_version"] == tf.__version__
    assert 1 <= metrics["epochs_run"] <= 3
    assert metrics["training_seconds"] > 0
    saved_model_bytes = sum(path.stat().st_size for path in (output_dir / "saved_model").rglob("*") if path.is_file())
    assert metrics["model_bytes"] == saved_model_bytes


def test_metrics_json_three_classes(three_class_version):
    _, output_dir, metrics = three_class_version

    assert metrics["classes"] == ["mid", "neg", "pos"]
    assert sorted(metrics["per_class"]) == ["mid", "neg", "pos"]
    for figures in metrics["per_class"].values():
        assert set(figures) == {"precision", "recall", "support"}
        assert 0.0 <= figures["precision"] <= 1.0
    recalls = [figures["recall"] for figures in metrics["per_class"].values()]
    assert metrics["balanced_accuracy"] == pytest.approx(sum(recalls) / 3)
    assert metrics["balanced_accuracy_method"] == "mean of the per-class recalls on the validation slice"
    assert metrics["input_name"] == "review_text"
    assert sum(metrics["validation_class_counts"].values()) == metrics["example_counts"]["validation"]


def test_train_and_export_writes_version(tmp_path):
    examples = make_examples(["a", "b"], rows=120)

    metrics = train_and_export(examples, tmp_path, max_epochs=1, settings=TINY_SETTINGS, trained_before="2014-02-01")

    assert (tmp_path / "saved_model" / "saved_model.pb").is_file()
    assert (tmp_path / "metrics.json").is_file()
    assert metrics["trained_before"] == "2014-02-01"
    assert metrics["epochs_run"] == 1


def test_refit_on_all_examples(tmp_path):
    examples = make_examples(["a", "b"], rows=120)

    result = train_model(examples, max_epochs=2, settings=TINY_SETTINGS, refit_on_all_examples=True)

    assert result.metrics["refit_on_all_examples"] is True
    assert 1 <= result.metrics["best_epochs"] <= result.metrics["epochs_run"]
    predicted = predict_in_memory(result.model, result.classes, ["최악 별로 bad", "최고 감동 great"])
    assert predicted["class_probabilities"].shape == (2, 2)


def skewed_log_probabilities(rng: np.random.Generator, counts: list[int], bias: list[float]) -> tuple[np.ndarray, np.ndarray]:
    # Each row's true class gets a higher score on average, and ``bias`` favours some classes
    # for every row, as a model trained on a skewed mix does.
    true_ids = np.repeat(np.arange(len(counts)), counts)
    scores = rng.normal(0.0, 1.0, size=(len(true_ids), len(counts)))
    scores[np.arange(len(true_ids)), true_ids] += 1.5
    scores += np.array(bias)
    log_probabilities = scores - np.log(np.sum(np.exp(scores), axis=1, keepdims=True))
    return log_probabilities, true_ids


def recalls(true_ids: np.ndarray, predicted_ids: np.ndarray) -> list[float]:
    return [float(np.mean(predicted_ids[true_ids == index] == index)) for index in np.unique(true_ids)]


def test_logit_offsets_equalise_two_class_recalls():
    rng = np.random.default_rng(SEED)
    log_probabilities, true_ids = skewed_log_probabilities(rng, [1000, 9000], [0.0, 1.0])
    before = recalls(true_ids, np.argmax(log_probabilities, axis=1))

    offsets = fit_logit_offsets(log_probabilities, true_ids)
    after = recalls(true_ids, np.argmax(log_probabilities + offsets, axis=1))

    assert before[0] < 0.7 < before[1]
    assert offsets[0] == 0.0
    # The best offset cancels the bias of 1.0. Balanced accuracy is flat near its maximum, so
    # sampling noise moves the offset found by a few tenths.
    assert -1.5 < offsets[1] < -0.5
    assert abs(after[0] - after[1]) < abs(before[0] - before[1]) / 2
    assert np.mean(after) > np.mean(before) + 0.03


def test_logit_offsets_three_classes():
    rng = np.random.default_rng(SEED)
    log_probabilities, true_ids = skewed_log_probabilities(rng, [600, 3000, 1400], [-0.8, 0.7, 0.0])
    before = recalls(true_ids, np.argmax(log_probabilities, axis=1))

    offsets = fit_logit_offsets(log_probabilities, true_ids)
    after = recalls(true_ids, np.argmax(log_probabilities + offsets, axis=1))

    assert offsets.shape == (3,)
    assert offsets[0] == 0.0
    assert np.mean(after) > np.mean(before) + 0.03
    assert max(after) - min(after) < max(before) - min(before)


def test_logit_offsets_zero_when_already_balanced():
    log_probabilities = np.log(np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9]]))
    true_ids = np.array([0, 0, 1, 1])

    offsets = fit_logit_offsets(log_probabilities, true_ids)

    assert offsets.tolist() == [0.0, 0.0]


def test_logit_offsets_zero_with_one_class_present():
    log_probabilities = np.log(np.array([[0.9, 0.1], [0.4, 0.6]]))

    offsets = fit_logit_offsets(log_probabilities, np.array([1, 1]))

    assert offsets.tolist() == [0.0, 0.0]


def test_add_logit_offsets_shifts_softmax_inputs():
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(SEED)
    classifier = build_classifier(TINY_SETTINGS, 3, vocabulary_size=50)
    token_ids = np.random.default_rng(SEED).integers(0, 50, size=(16, TINY_SETTINGS.sequence_length))
    before = classifier.predict(token_ids, verbose=0)
    offsets = np.array([0.0, 1.5, -0.5])

    add_logit_offsets(classifier, offsets)
    after = classifier.predict(token_ids, verbose=0)

    expected = before * np.exp(offsets)
    expected /= expected.sum(axis=1, keepdims=True)
    assert np.max(np.abs(after - expected)) < 1e-5
    assert np.allclose(after.sum(axis=1), 1.0, atol=1e-5)


def test_training_balances_recalls_on_skewed_examples(tmp_path):
    # Nine in ten examples are "pos", and a third of each class's texts carry the other class's
    # words, so a model fitted without class weights favours "pos".
    rng = np.random.default_rng(SEED)
    rows = 600
    labels = np.where(rng.random(rows) < 0.9, "pos", "neg")
    texts = []
    for label in labels:
        own, other = (CLASS_WORDS["pos"], CLASS_WORDS["neg"]) if label == "pos" else (CLASS_WORDS["neg"], CLASS_WORDS["pos"])
        words = rng.choice(own if rng.random() > 0.35 else other, size=2).tolist() + ["영화"]
        texts.append(" ".join(words))
    examples = pa.table(
        {
            "text": pa.array(texts, pa.string()),
            "label": pa.array(labels.tolist(), pa.string()),
            "example_date": pa.array([FIRST_DAY + dt.timedelta(days=row * DAYS // rows) for row in range(rows)], pa.date32()),
        }
    )

    result = train_model(examples, max_epochs=3, settings=TINY_SETTINGS, batch_size=32, class_weighting="none")
    metrics = write_model_version(result, tmp_path)

    assert metrics["balance_recalls"] is True
    assert metrics["balanced_accuracy"] >= metrics["balanced_accuracy_before_offsets"]
    assert sorted(metrics["logit_offsets"]) == ["neg", "pos"]
    assert metrics["logit_offsets"]["neg"] == 0.0
    # The exported model applies the offsets: its labels on the validation texts give the
    # balanced accuracy recorded in the metrics.
    validation_texts = texts[-metrics["example_counts"]["validation"] :]
    validation_ids = np.array([result.classes.index(label) for label in labels[-len(validation_texts) :]])
    replies = predict_in_fresh_process(tmp_path / "saved_model", "text", [validation_texts])
    predicted_ids = np.array([result.classes.index(label) for label in replies[0]["predicted_label"]])
    assert evaluate_predictions(validation_ids, predicted_ids, result.classes)["balanced_accuracy"] == pytest.approx(
        metrics["balanced_accuracy"], abs=1e-9
    )


def test_balance_recalls_off_keeps_zero_offsets():
    examples = make_examples(["a", "b"], rows=120)

    result = train_model(examples, max_epochs=1, settings=TINY_SETTINGS, balance_recalls=False)

    assert result.metrics["logit_offsets"] == {"a": 0.0, "b": 0.0}
    assert result.metrics["balanced_accuracy"] == result.metrics["balanced_accuracy_before_offsets"]


def sparse_gradient(rows: list[int], values: list[list[float]]):
    return tf.IndexedSlices(tf.constant(values, tf.float32), tf.constant(rows, tf.int64), dense_shape=tf.constant([6, 2], tf.int64))


def test_lazy_adam_matches_adam_on_used_rows():
    keras = pytest.importorskip("keras")
    lazy_table = keras.Variable(np.ones((6, 2), np.float32))
    adam_table = keras.Variable(np.ones((6, 2), np.float32))
    lazy, adam = LazyAdam(0.1), keras.optimizers.Adam(0.1)
    gradient = sparse_gradient([1, 4], [[0.5, -1.0], [2.0, 0.1]])

    for _ in range(3):
        lazy.apply([gradient], [lazy_table])
        adam.apply([tf.convert_to_tensor(gradient)], [adam_table])

    # The two compute the moments in a different order, which changes the last float32 digits.
    assert np.max(np.abs(lazy_table.numpy() - adam_table.numpy())) < 1e-5
    assert lazy_table.numpy()[[0, 2, 3, 5]].tolist() == [[1.0, 1.0]] * 4


def test_lazy_adam_skips_unused_rows():
    keras = pytest.importorskip("keras")
    table = keras.Variable(np.ones((6, 2), np.float32))
    optimizer = LazyAdam(0.1)

    optimizer.apply([sparse_gradient([1, 4], [[0.5, -1.0], [2.0, 0.1]])], [table])
    after_first_step = table.numpy().copy()
    optimizer.apply([sparse_gradient([2], [[1.0, 1.0]])], [table])

    # Dense Adam would move rows 1 and 4 again with their momentum.
    assert table.numpy()[[1, 4]].tolist() == after_first_step[[1, 4]].tolist()
    assert np.all(table.numpy()[2] < 1.0)


def test_lazy_adam_sums_repeated_rows():
    keras = pytest.importorskip("keras")
    repeated_table = keras.Variable(np.ones((6, 2), np.float32))
    summed_table = keras.Variable(np.ones((6, 2), np.float32))
    repeated_optimizer, summed_optimizer = LazyAdam(0.1), LazyAdam(0.1)

    for _ in range(2):
        repeated_optimizer.apply([sparse_gradient([3, 3, 0], [[0.2, -0.4], [0.1, 0.1], [1.0, 1.0]])], [repeated_table])
        summed_optimizer.apply([sparse_gradient([3, 0], [[0.3, -0.3], [1.0, 1.0]])], [summed_table])

    assert np.max(np.abs(repeated_table.numpy() - summed_table.numpy())) < 1e-6


def test_one_class_is_rejected():
    examples = make_examples(["only"], rows=60)

    with pytest.raises(ValueError, match=r"has 1 class\(es\) \['only'\] among 60 labelled examples"):
        train_model(examples, settings=TINY_SETTINGS)


def test_too_few_examples_are_rejected():
    examples = make_examples(["a", "b"], rows=10)

    with pytest.raises(ValueError, match="Only 10 labelled examples"):
        train_model(examples, settings=TINY_SETTINGS)


def test_missing_column_is_rejected():
    examples = make_examples(["a", "b"], rows=40)

    with pytest.raises(ValueError, match="no column 'review_date'"):
        train_model(examples, date_column="review_date", settings=TINY_SETTINGS)


def test_single_day_is_rejected():
    examples = make_examples(["a", "b"], rows=40).set_column(2, "example_date", pa.array([FIRST_DAY] * 40, pa.date32()))

    with pytest.raises(ValueError, match="span 1 day"):
        train_model(examples, settings=TINY_SETTINGS)


def test_null_text_becomes_empty_string():
    examples = pa.table(
        {
            "text": pa.array([None, "a"], pa.string()),
            "label": pa.array(["x", None], pa.string()),
            "example_date": pa.array([FIRST_DAY, FIRST_DAY], pa.date32()),
        }
    )

    data = read_labelled_examples(examples, text_column="text", label_column="label", date_column="example_date")

    assert data.texts.tolist() == [""]
    assert data.labels.tolist() == ["x"]
    assert data.dropped_null_labels == 1


def test_validation_takes_latest_whole_days():
    dates = np.array(["2014-01-01"] * 50 + ["2014-01-02"] * 40 + ["2014-01-03"] * 6 + ["2014-01-04"] * 4, dtype="datetime64[D]")

    assert validation_start_day(dates, 0.1) == np.datetime64("2014-01-03")
    assert validation_start_day(dates, 0.04) == np.datetime64("2014-01-04")
    assert validation_start_day(dates, 0.99) == np.datetime64("2014-01-02")


def test_train_command_writes_version(tmp_path):
    import pyarrow.parquet as pq

    examples_file = tmp_path / "examples.parquet"
    pq.write_table(make_examples(["a", "b"], rows=120), examples_file)
    output_dir = tmp_path / "version"

    completed = subprocess.run(
        [sys.executable, "-m", "textclf", "train", "--examples", str(examples_file), "--output-dir", str(output_dir), "--max-epochs", "1"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "Epoch 1/1: loss" in completed.stderr
    assert (output_dir / "saved_model" / "saved_model.pb").is_file()
    assert json.loads((output_dir / "metrics.json").read_text(encoding="utf-8"))["classes"] == ["a", "b"]


def test_examples_query_needs_project_and_location(tmp_path):
    from textclf.training.main import main

    query_file = tmp_path / "examples.sql"
    query_file.write_text("SELECT 1", encoding="utf-8")

    with pytest.raises(SystemExit, match="--examples-query needs --bigquery-project and --bigquery-location"):
        main(["--examples-query", str(query_file), "--output-dir", str(tmp_path / "out")])


def test_examples_query_rejects_invalid_parameters(tmp_path):
    from textclf.training.main import main

    query_file = tmp_path / "examples.sql"
    query_file.write_text("SELECT 1", encoding="utf-8")
    arguments = ["--examples-query", str(query_file), "--output-dir", str(tmp_path / "out"), "--bigquery-project", "my-project"]

    with pytest.raises(SystemExit, match="--query-parameters is not valid JSON"):
        main([*arguments, "--bigquery-location", "US", "--query-parameters", "{run_day"])
