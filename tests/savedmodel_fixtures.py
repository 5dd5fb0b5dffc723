"""A tiny text-classification SavedModel, built the way the training step exports one."""

from __future__ import annotations

from pathlib import Path

CLASS_NAMES = ("negative", "positive")
SEQUENCE_LENGTH = 64
SEED = 7


def export_text_classifier(saved_model_dir: Path) -> Path:
    """Train nothing, build a character-level classifier and export it as a SavedModel.

    The serving signature takes ``text`` (string ``[None]``) and returns ``predicted_label``
    (string ``[None]``), ``predicted_probability`` (float32 ``[None]``) and ``class_probabilities``
    (float32 ``[None, 2]``).

    :param saved_model_dir: folder to write; it must not exist yet.
    """
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(SEED)

    # Characters are enough for a test model and make every string, Korean and emoji included, map to tokens.
    vectorizer = keras.layers.TextVectorization(
        split="character", output_mode="int", output_sequence_length=SEQUENCE_LENGTH, max_tokens=200
    )
    vectorizer.adapt(tf.constant(["좋은 영화였다", "bad movie", "great film 👍", "최악이다 ㅠㅠ", "so so"]))
    inputs = keras.Input(shape=(), dtype="string", name="text")
    embedded = keras.layers.Embedding(200, 8)(vectorizer(inputs))
    pooled = keras.layers.GlobalAveragePooling1D()(embedded)
    probabilities = keras.layers.Dense(len(CLASS_NAMES), activation="softmax")(pooled)
    end_to_end_model = keras.Model(inputs, probabilities)

    class_names = tf.constant(CLASS_NAMES)

    def serve(text):
        class_probabilities = end_to_end_model(text)
        best_class = tf.argmax(class_probabilities, axis=1)
        return {
            "predicted_label": tf.gather(class_names, best_class),
            "predicted_probability": tf.reduce_max(class_probabilities, axis=1),
            "class_probabilities": class_probabilities,
        }

    archive = keras.export.ExportArchive()
    archive.track(end_to_end_model)
    archive.add_endpoint(
        name="serving_default",
        fn=serve,
        input_signature=[tf.TensorSpec([None], tf.string, name="text")],
    )
    archive.write_out(str(saved_model_dir), verbose=False)
    return saved_model_dir
