"""``ML.PREDICT`` for the embedded warehouse: a SavedModel's serving signature applied to Arrow batches.

Only tasks import this module: it imports TensorFlow when a model is first loaded.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from textclf.warehouse.base import WarehouseError

log = logging.getLogger(__name__)

SERVING_SIGNATURE = "serving_default"

# Rows per batch sent through the model, measured with benchmarks/predict.py (tensorflow-cpu 2.21,
# 2 CPU cores) on the NSMC model (character 1-3-grams, 450 tokens per text). With little other load,
# 146,182 rows took 3.1-3.5 s at 4,096 or 8,192 rows per batch, 3.4-5.4 s at 2,048 and 3.9-5.5 s at
# 1,024. With the cores shared by other jobs, 256 to 2,048 rows were fastest and 8,192 rows were
# 2 to 4 times slower. Per-batch tensors grow with the batch (2,048 x 450 x 32 floats is 118 MB).
# On a quiet machine, the predict step ran at 0.874 of the bare signature's best speed with 2,048
# rows per batch (peak 1,180 MB), 0.87-0.91 with 4,096 (1,298 MB) and 0.956 with 8,192 (1,636 MB).
# 2,048 keeps memory lowest and holds up best under load; the connection extra
# `predict_batch_size` trades memory for speed.
DEFAULT_BATCH_SIZE = 2048

# Predicted batches that may wait for the consumer while the next one is predicted.
PREFETCH_BATCHES = 2
_QUEUE_POLL_SECONDS = 0.1
_END_OF_STREAM = object()

# Signature dtype -> Arrow type of the output column, as BigQuery ML types outputs of imported
# TensorFlow models: every float becomes FLOAT64, every integer INT64.
_OUTPUT_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "bool": pa.bool_(),
    "float16": pa.float64(),
    "bfloat16": pa.float64(),
    "float32": pa.float64(),
    "float64": pa.float64(),
    "int8": pa.int64(),
    "int16": pa.int64(),
    "int32": pa.int64(),
    "int64": pa.int64(),
    "uint8": pa.int64(),
    "uint16": pa.int64(),
    "uint32": pa.int64(),
}

_BIGQUERY_TYPE_NAMES = {"string": "STRING", "bool": "BOOL"}


@dataclass(frozen=True)
class TensorInfo:
    """One input or output of a serving signature: its key, dtype name and shape (None for any size)."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]

    @property
    def bigquery_type(self) -> str:
        """The BigQuery column type that feeds or receives this tensor."""
        if self.dtype in _BIGQUERY_TYPE_NAMES:
            scalar = _BIGQUERY_TYPE_NAMES[self.dtype]
        elif self.dtype.startswith(("float", "bfloat")):
            scalar = "FLOAT64"
        else:
            scalar = "INT64"
        return scalar if len(self.shape) <= 1 else f"ARRAY<{scalar}>"


@dataclass(frozen=True)
class SignatureInfo:
    """The inputs and outputs of a SavedModel's serving signature."""

    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]

    def to_json(self) -> str:
        return json.dumps(
            {
                "inputs": [[t.name, t.dtype, list(t.shape)] for t in self.inputs],
                "outputs": [[t.name, t.dtype, list(t.shape)] for t in self.outputs],
            }
        )

    @classmethod
    def from_json(cls, text: str) -> SignatureInfo:
        values = json.loads(text)
        return cls(
            inputs=tuple(TensorInfo(name, dtype, tuple(shape)) for name, dtype, shape in values["inputs"]),
            outputs=tuple(TensorInfo(name, dtype, tuple(shape)) for name, dtype, shape in values["outputs"]),
        )


@dataclass(frozen=True)
class LoadedModel:
    """A loaded SavedModel: its folder, its serving function and that function's signature."""

    saved_model_dir: Path
    serving_fn: Callable[..., dict[str, Any]]
    signature: SignatureInfo
    # The object tf.saved_model.load returned; the serving function needs it kept alive.
    module: Any


_cache: dict[tuple[str, int], LoadedModel] = {}
_cache_lock = threading.Lock()


def saved_model_dir_from_path(model_path: str) -> Path:
    """Return the local SavedModel folder named by a BigQuery ML ``model_path``.

    Accepts a folder, a ``file://`` URI, either optionally ending in ``/*`` as BigQuery ML's
    ``gs://bucket/model/*`` form does.

    :param model_path: the ``model_path`` option of ``CREATE MODEL``.
    """
    path = model_path.strip()
    if path.startswith("gs://"):
        raise WarehouseError(
            f"Model path {model_path!r} is on Cloud Storage, which the embedded warehouse cannot read. "
            f"Copy the SavedModel to a local folder and pass that folder (or a file:// URI)."
        )
    if path.startswith("file://"):
        path = path[len("file://") :]
    if path.endswith("/*"):
        path = path[:-2]
    return Path(path).expanduser().resolve()


def load_model(saved_model_dir: Path) -> LoadedModel:
    """Load a SavedModel's serving signature, once per process and SavedModel version.

    The cache key includes the modification time of ``saved_model.pb``, so a SavedModel rewritten at
    the same path is loaded again.

    :param saved_model_dir: the folder that contains ``saved_model.pb``.
    """
    graph_file = saved_model_dir / "saved_model.pb"
    if not graph_file.is_file():
        raise WarehouseError(
            f"No SavedModel at {saved_model_dir}: {graph_file.name} not found. "
            f"Point model_path at the folder the model was exported to."
        )
    key = (str(saved_model_dir), graph_file.stat().st_mtime_ns)
    with _cache_lock:
        if key in _cache:
            return _cache[key]

        import tensorflow as tf

        started = time.monotonic()
        try:
            module = tf.saved_model.load(str(saved_model_dir))
        except Exception as error:  # TensorFlow raises many unrelated types for a corrupt SavedModel.
            raise WarehouseError(f"Failed to load the SavedModel at {saved_model_dir}: {error}") from error
        signatures = getattr(module, "signatures", {})
        if SERVING_SIGNATURE not in signatures:
            raise WarehouseError(
                f"SavedModel {saved_model_dir} has no {SERVING_SIGNATURE!r} signature (found: "
                f"{sorted(signatures) or 'none'}). Export it with a serving_default endpoint."
            )
        serving_fn = signatures[SERVING_SIGNATURE]
        loaded = LoadedModel(saved_model_dir, serving_fn, _describe_signature(serving_fn), module)
        _cache[key] = loaded
        log.info("Loaded SavedModel %s in %.1f s", saved_model_dir, time.monotonic() - started)
        return loaded


def _describe_signature(serving_fn: Any) -> SignatureInfo:
    _, input_specs = serving_fn.structured_input_signature
    output_specs = serving_fn.structured_outputs
    if not isinstance(output_specs, dict):
        raise WarehouseError("The serving signature must return a dict of named outputs.")

    def describe(name: str, spec: Any) -> TensorInfo:
        return TensorInfo(name, spec.dtype.name, tuple(spec.shape.as_list()) if spec.shape.rank is not None else ())

    return SignatureInfo(
        inputs=tuple(describe(name, spec) for name, spec in sorted(input_specs.items())),
        outputs=tuple(describe(name, spec) for name, spec in sorted(output_specs.items())),
    )


def check_serving(loaded: LoadedModel) -> None:
    """Call the serving signature on two generated rows and check every output has one row per input.

    :param loaded: the model to check.
    """
    import tensorflow as tf

    inputs = {}
    for tensor in loaded.signature.inputs:
        if len(tensor.shape) == 0 or tensor.shape[0] is not None:
            raise WarehouseError(
                f"SavedModel {loaded.saved_model_dir}: input {tensor.name!r} has shape {list(tensor.shape)}, "
                f"but ML.PREDICT needs a batch dimension of any size first, e.g. [None]."
            )
        row_shape = [dimension or 1 for dimension in tensor.shape[1:]]
        if tensor.dtype == "string":
            inputs[tensor.name] = tf.fill([2, *row_shape], tf.constant("sample text"))
        else:
            inputs[tensor.name] = tf.zeros([2, *row_shape], dtype=tensor.dtype)
    for tensor in loaded.signature.outputs:
        if tensor.dtype not in _OUTPUT_TYPES or len(tensor.shape) not in (1, 2):
            raise WarehouseError(
                f"SavedModel {loaded.saved_model_dir}: output {tensor.name!r} has dtype {tensor.dtype} and shape "
                f"{list(tensor.shape)}; ML.PREDICT supports numeric, bool and string outputs of shape [None] or "
                f"[None, k]."
            )

    try:
        outputs = loaded.serving_fn(**inputs)
    except Exception as error:  # Any failure of the graph means the model cannot serve.
        raise WarehouseError(
            f"SavedModel {loaded.saved_model_dir}: the {SERVING_SIGNATURE!r} signature failed on sample input: {error}"
        ) from error
    for name, value in outputs.items():
        if value.shape[0] != 2:
            raise WarehouseError(
                f"SavedModel {loaded.saved_model_dir}: output {name!r} returned {value.shape[0]} rows for 2 input "
                f"rows; every output needs one row per input row."
            )


def output_fields(signature: SignatureInfo) -> list[pa.Field]:
    """Return the Arrow fields of the model's output columns, in signature order."""
    fields = []
    for tensor in signature.outputs:
        value_type = _OUTPUT_TYPES[tensor.dtype]
        fields.append(pa.field(tensor.name, value_type if len(tensor.shape) == 1 else pa.list_(value_type)))
    return fields


def check_input_schema(model_name: str, signature: SignatureInfo, schema: pa.Schema) -> None:
    """Raise a ``WarehouseError`` unless ``schema`` has a column of a fitting type for every model input.

    :param model_name: the model as written in the SQL, for messages.
    :param signature: the model's serving signature.
    :param schema: the schema of the query that ML.PREDICT reads.
    """
    for tensor in signature.inputs:
        if tensor.name not in schema.names:
            raise WarehouseError(
                f"ML.PREDICT with model {model_name}: the input query has no column {tensor.name!r}, which the "
                f"model needs as {tensor.bigquery_type}. Select or alias a column named {tensor.name!r} "
                f"(columns found: {', '.join(schema.names)})."
            )
        arrow_type = schema.field(tensor.name).type
        if not _fits(arrow_type, tensor):
            raise WarehouseError(
                f"ML.PREDICT with model {model_name}: column {tensor.name!r} has type {arrow_type}, but the model "
                f"expects {tensor.bigquery_type}. CAST the column to {tensor.bigquery_type} in the input query."
            )


def _fits(arrow_type: pa.DataType, tensor: TensorInfo) -> bool:
    if len(tensor.shape) > 1:
        if not (pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type) or pa.types.is_fixed_size_list(arrow_type)):
            return False
        arrow_type = arrow_type.value_type
    if tensor.dtype == "string":
        return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) or pa.types.is_string_view(arrow_type)
    if tensor.dtype == "bool":
        return pa.types.is_boolean(arrow_type)
    if tensor.dtype.startswith(("float", "bfloat")):
        return pa.types.is_floating(arrow_type) or pa.types.is_integer(arrow_type)
    return pa.types.is_integer(arrow_type)


def predict_batches(
    model_name: str, loaded: LoadedModel, reader: pa.RecordBatchReader, *, on_close: Callable[[], None] | None = None
) -> pa.RecordBatchReader:
    """Return a reader that streams ``reader``'s batches through the model, outputs first, inputs after.

    Batches are read one at a time, so memory stays bounded whatever the row count. Every input
    column passes through, as BigQuery ML does for imported TensorFlow models; an input column named
    like an output is replaced by the output.

    :param model_name: the model as written in the SQL, for messages and logs.
    :param loaded: the model to run.
    :param reader: batches of the ML.PREDICT input query.
    :param on_close: called once the stream is exhausted or abandoned, e.g. to close a cursor.
    """
    check_input_schema(model_name, loaded.signature, reader.schema)
    outputs = output_fields(loaded.signature)
    output_names = {field.name for field in outputs}
    passed_through = [field for field in reader.schema if field.name not in output_names]
    schema = pa.schema([*outputs, *passed_through])
    return pa.RecordBatchReader.from_batches(
        schema, _predict_stream(model_name, loaded, reader, schema, passed_through, on_close)
    )


def _predict_stream(
    model_name: str,
    loaded: LoadedModel,
    reader: pa.RecordBatchReader,
    schema: pa.Schema,
    passed_through: list[pa.Field],
    on_close: Callable[[], None] | None,
) -> Iterator[pa.RecordBatch]:
    # A background thread reads, converts and predicts the next batches while the consumer (DuckDB,
    # inserting the rows) works on the current one. TensorFlow releases the GIL while the model
    # runs, so the two overlap on separate cores. The bounded queue keeps at most
    # PREFETCH_BATCHES predicted batches waiting, so memory stays bounded whatever the row count.
    started = time.monotonic()
    rows = 0
    batches = 0
    ready: queue.Queue[Any] = queue.Queue(maxsize=PREFETCH_BATCHES)
    stop = threading.Event()

    def offer(item: Any) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=_QUEUE_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for batch in reader:
                if batch.num_rows == 0:
                    continue
                predictions = _predict_batch(model_name, loaded, batch)
                columns = [*predictions, *(batch.column(field.name) for field in passed_through)]
                if not offer(pa.RecordBatch.from_arrays(columns, schema=schema)):
                    return
        except BaseException as error:  # Raised again in the consumer's thread, with its traceback.
            offer(error)
            return
        offer(_END_OF_STREAM)

    producer = threading.Thread(target=produce, name=f"ml-predict-{model_name}", daemon=True)
    producer.start()
    try:
        while True:
            item = ready.get()
            if item is _END_OF_STREAM:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
            rows += item.num_rows
            batches += 1
            if batches % 100 == 0:
                log.info("ML.PREDICT %s: %d rows predicted so far", model_name, rows)
    finally:
        # The producer must stop reading before on_close closes the cursor it reads from.
        stop.set()
        producer.join()
        if on_close is not None:
            on_close()
    seconds = time.monotonic() - started
    log.info(
        "ML.PREDICT %s: %d rows in %d batches, %.2f s (%.0f rows/s)",
        model_name,
        rows,
        batches,
        seconds,
        rows / seconds if seconds > 0 else 0.0,
    )


def _predict_batch(model_name: str, loaded: LoadedModel, batch: pa.RecordBatch) -> list[pa.Array]:
    import tensorflow as tf

    inputs = {tensor.name: _to_tensor(tf, batch.column(tensor.name), tensor) for tensor in loaded.signature.inputs}
    try:
        results = loaded.serving_fn(**inputs)
    except Exception as error:  # The graph may raise any TensorFlow error on bad values.
        raise WarehouseError(f"ML.PREDICT with model {model_name} failed on a batch of {batch.num_rows} rows: {error}") from error

    arrays = []
    for tensor in loaded.signature.outputs:
        value = results[tensor.name].numpy()
        if value.shape[0] != batch.num_rows:
            raise WarehouseError(
                f"ML.PREDICT with model {model_name}: output {tensor.name!r} has {value.shape[0]} rows for "
                f"{batch.num_rows} input rows."
            )
        arrays.append(_to_arrow(value, tensor))
    return arrays


def _to_tensor(tf: Any, column: pa.Array, tensor: TensorInfo) -> Any:
    if len(tensor.shape) > 1:
        # A list column feeds a [None, k] input, so every list must contain exactly k values.
        width = tensor.shape[1]
        values = pc.fill_null(column.flatten(), 0).to_numpy(zero_copy_only=False)
        return tf.constant(values.reshape(len(column), width if width is not None else -1), dtype=tensor.dtype)
    if tensor.dtype == "string":
        # NULL text is scored as '' so a NULL never fails the batch. NOTE: BigQuery ML's handling of a
        # NULL STRING input is not verified, which is why sql/predict.sql sends COALESCE(text, '').
        # Binary to NumPy (bytes objects) was about 6 times faster than str objects into tf.constant
        # in a one-off measurement on 146,000 NSMC texts (tensorflow-cpu 2.21, 2 cores).
        values = pc.fill_null(column, "").cast(pa.binary()).to_numpy(zero_copy_only=False)
        return tf.constant(values, dtype=tf.string)
    # NULL numbers are scored as 0.
    return tf.constant(pc.fill_null(column, 0).to_numpy(zero_copy_only=False), dtype=tensor.dtype)


def _to_arrow(value: np.ndarray, tensor: TensorInfo) -> pa.Array:
    value_type = _OUTPUT_TYPES[tensor.dtype]
    if tensor.dtype == "string":
        flat = pa.array(value.reshape(-1), type=pa.binary()).cast(pa.string())
    else:
        flat = pa.array(value.reshape(-1)).cast(value_type)
    if value.ndim == 1:
        return flat
    width = value.shape[1] if value.ndim == 2 else int(np.prod(value.shape[1:]))
    offsets = pa.array(np.arange(0, value.shape[0] * width + 1, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, flat)
