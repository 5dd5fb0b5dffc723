"""Export of the end-to-end model as a SavedModel with the serving signature BigQuery ML reads.

The ``serving_default`` signature takes ONE input, a ``tf.string`` vector named ``input_name``,
and returns three flat tensors whose names become the columns of ``ML.PREDICT``:

- ``predicted_label``: ``tf.string [batch]``, the class with the highest probability;
- ``predicted_probability``: ``tf.float32 [batch]``, that class's probability;
- ``class_probabilities``: ``tf.float32 [batch, num_classes]``, in the order of ``classes``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import keras
import tensorflow as tf

from textclf.identifiers import validate_column

log = logging.getLogger(__name__)

SIGNATURE_NAME = "serving_default"
OUTPUT_NAMES = ("predicted_label", "predicted_probability", "class_probabilities")


def serving_outputs(model: keras.Model, classes: tf.Tensor, texts: tf.Tensor) -> dict[str, tf.Tensor]:
    """Run the end-to-end model on ``texts`` and return the three serving outputs.

    :param model: the end-to-end model, strings in and probabilities out.
    :param classes: ``tf.string`` constant with the class names in output order.
    :param texts: ``tf.string`` vector of texts.
    """
    probabilities = tf.cast(model(texts, training=False), tf.float32)
    best = tf.argmax(probabilities, axis=1, output_type=tf.int32)
    return {
        "predicted_label": tf.gather(classes, best),
        "predicted_probability": tf.reduce_max(probabilities, axis=1),
        "class_probabilities": probabilities,
    }


def predict_in_memory(model: keras.Model, classes: Sequence[str], texts: Sequence[str]) -> dict:
    """Return the serving outputs of the in-memory model as NumPy arrays, for comparison with an export.

    :param model: the end-to-end model.
    :param classes: class names in output order.
    :param texts: texts to classify.
    """
    outputs = serving_outputs(model, tf.constant(list(classes), dtype=tf.string), tf.constant(list(texts), dtype=tf.string))
    return {name: value.numpy() for name, value in outputs.items()}


def export_saved_model(model: keras.Model, classes: Sequence[str], saved_model_dir: str | Path, *, input_name: str = "text") -> None:
    """Write ``model`` as a SavedModel whose ``serving_default`` signature BigQuery ML can import.

    :param model: the end-to-end model, strings in and probabilities out.
    :param classes: class names in output order; they are stored as a constant in the graph.
    :param saved_model_dir: target folder, local or ``gs://``; it is replaced.
    :param input_name: name of the single string input, a valid BigQuery column name.
    """
    validate_column(input_name, what="input name")
    class_names = tf.constant([str(name) for name in classes], dtype=tf.string)

    # The signature's input key comes from the TensorSpec name, so the argument name is fixed
    # while the input name follows `input_name`.
    def serve(texts):
        return serving_outputs(model, class_names, texts)

    # Tracking the whole model would store every weight twice (Keras 3.15 saves the Keras
    # variables and the TensorFlow variables the endpoint uses as separate objects). The endpoint
    # tracks the variables it uses by itself, so only the vectorizers' lookup tables are tracked.
    archive = keras.export.ExportArchive()
    for layer in model.layers:
        if isinstance(layer, keras.layers.TextVectorization):
            archive.track(layer)
    archive.add_endpoint(
        name=SIGNATURE_NAME,
        fn=serve,
        input_signature=[tf.TensorSpec(shape=[None], dtype=tf.string, name=input_name)],
    )
    archive.write_out(str(saved_model_dir), verbose=False)
    log.info("Exported SavedModel with input %s and outputs %s to %s", input_name, ", ".join(OUTPUT_NAMES), saved_model_dir)
