"""The Keras text classifier: raw strings in, class probabilities out.

The model is an embedding bag over character unigrams, bigrams and trigrams. Korean is
agglutinative, so character n-grams capture word stems and endings that whitespace tokens split
into many rare forms. Token ids feed an ``Embedding`` whose rows are averaged over the non-padding positions,
then a small hidden layer and a softmax. Working memory at serve time grows with
``batch rows x sequence length x embedding dim``, which stays bounded because every text is cut to
``max_chars`` characters and ``sequence_length`` tokens.

TensorFlow is imported at module level: only training tasks import this module.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import keras
import tensorflow as tf

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class ModelSettings:
    """Sizes of the classifier.

    :param max_tokens: vocabulary size, padding and out-of-vocabulary ids included.
    :param ngram_widths: character n-gram widths. ``tf.strings.ngrams`` emits all n-grams of the
        first width, then of the next, so ``sequence_length`` cuts the widest n-grams first.
    :param max_chars: characters kept from the start of each text; the rest is ignored.
    :param sequence_length: token ids per text after padding or truncation.
    :param embedding_dim: width of each token embedding.
    :param hidden_units: width of the hidden layer; 0 leaves the layer out.
    :param dropout: dropout rate on the pooled embedding during training.
    """

    max_tokens: int = 500_000
    ngram_widths: tuple[int, ...] = (1, 2, 3)
    max_chars: int = 150
    # 150 characters give 150 + 149 + 148 = 447 n-grams, so no n-gram of a full text is cut.
    sequence_length: int = 450
    embedding_dim: int = 32
    hidden_units: int = 64
    dropout: float = 0.5

    def __post_init__(self) -> None:
        for name in ("max_tokens", "max_chars", "sequence_length", "embedding_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
        if self.max_tokens < 3:
            raise ValueError(f"`max_tokens` must be at least 3 (padding, out-of-vocabulary, one token). Received: max_tokens={self.max_tokens}")
        if not self.ngram_widths or not all(isinstance(width, int) and width >= 1 for width in self.ngram_widths):
            raise ValueError(f"`ngram_widths` must be a non-empty tuple of positive integers. Received: ngram_widths={self.ngram_widths!r}")
        if not isinstance(self.hidden_units, int) or self.hidden_units < 0:
            raise ValueError(f"`hidden_units` must be 0 or a positive integer. Received: hidden_units={self.hidden_units!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1). Received: dropout={self.dropout!r}")


@keras.saving.register_keras_serializable(package="textclf")
class TruncateAndLower(keras.layers.Layer):
    """Lowercase ASCII letters and keep the first ``max_chars`` UTF-8 characters of each string.

    Cutting the string before tokenizing bounds the tokenizer's working memory for very long texts.
    """

    def __init__(self, max_chars: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.max_chars = max_chars

    def call(self, inputs):
        lowered = tf.strings.lower(inputs)
        return tf.strings.substr(lowered, 0, self.max_chars, unit="UTF8_CHAR")

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "max_chars": self.max_chars}


@keras.saving.register_keras_serializable(package="textclf")
class MaskedMean(keras.layers.Layer):
    """Average token embeddings over the positions the mask keeps.

    Unlike ``GlobalAveragePooling1D``, a text with no tokens (a blank string) gets a zero vector
    instead of 0/0 = NaN.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is None:
            return keras.ops.mean(inputs, axis=1)
        weights = keras.ops.expand_dims(keras.ops.cast(mask, inputs.dtype), -1)
        total = keras.ops.sum(inputs * weights, axis=1)
        count = keras.ops.maximum(keras.ops.sum(weights, axis=1), 1.0)
        return total / count

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])


def build_vectorizer(settings: ModelSettings) -> keras.layers.TextVectorization:
    """Build the untrained ``TextVectorization`` layer that turns strings into token ids.

    :param settings: model sizes.
    """
    return keras.layers.TextVectorization(
        max_tokens=settings.max_tokens,
        standardize=None,
        split="character",
        ngrams=tuple(settings.ngram_widths),
        output_mode="int",
        output_sequence_length=settings.sequence_length,
        name="vectorizer",
    )


def build_classifier(settings: ModelSettings, num_classes: int, *, vocabulary_size: int) -> keras.Model:
    """Build the trainable part: token ids ``[batch, sequence_length]`` to class probabilities.

    :param settings: model sizes.
    :param num_classes: number of classes, at least 2.
    :param vocabulary_size: size of the adapted vocabulary, padding and out-of-vocabulary ids included.
    """
    if num_classes < 2:
        raise ValueError(f"`num_classes` must be at least 2. Received: num_classes={num_classes}")

    token_ids = keras.Input(shape=(settings.sequence_length,), dtype="int64", name="token_ids")
    embedded = keras.layers.Embedding(vocabulary_size, settings.embedding_dim, mask_zero=True, name="embedding")(token_ids)
    pooled = MaskedMean(name="masked_mean")(embedded)
    features = keras.layers.Dropout(settings.dropout, name="dropout")(pooled)
    if settings.hidden_units:
        features = keras.layers.Dense(settings.hidden_units, activation="relu", name="hidden")(features)
    probabilities = keras.layers.Dense(num_classes, activation="softmax", name="class_probabilities")(features)
    return keras.Model(token_ids, probabilities, name="classifier")


def build_end_to_end_model(
    vectorizer: keras.layers.TextVectorization, classifier: keras.Model, settings: ModelSettings
) -> keras.Model:
    """Join the adapted vectorizer and the trained classifier into a model that takes raw strings.

    :param vectorizer: the adapted ``TextVectorization`` layer.
    :param classifier: the trained classifier from :func:`build_classifier`.
    :param settings: model sizes; ``max_chars`` sets the truncation.
    """
    texts = keras.Input(shape=(), dtype="string", name="text")
    truncated = TruncateAndLower(settings.max_chars, name="truncate_and_lower")(texts)
    token_ids = vectorizer(truncated)
    probabilities = classifier(token_ids)
    return keras.Model(texts, probabilities, name="end_to_end_model")
