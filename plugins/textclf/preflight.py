"""Check that a SavedModel can be imported into BigQuery ML and served by the pipeline.

The ``check-model`` command runs :func:`check_saved_model` and prints the serving signature as
the SQL columns that ``ML.PREDICT`` reads and writes. It then prints each problem with its fix and
exits with 1 when there is one. The static checks read ``saved_model.pb`` without loading the model; the
memory check runs the model in a fresh Python process, so TensorFlow is imported only there and
inside the functions that need it.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from textclf.identifiers import InvalidIdentifierError, validate_column

log = logging.getLogger(__name__)

SIGNATURE_NAME = "serving_default"
# Default limits: a model folder of at most 450 MiB, and about 250 MiB of working memory per batch
# at prediction time. NOTE: these are this project's working figures for BigQuery ML imports, not
# values read from its documentation; check the CREATE MODEL limits before raising them.
DEFAULT_MAX_BYTES = 450 * 2**20
DEFAULT_MAX_BATCH_MEMORY_BYTES = 250 * 2**20
DEFAULT_BATCH_ROWS = 1024
# Ops that call back into Python, which BigQuery ML cannot run.
PYTHON_OPS = frozenset({"EagerPyFunc", "PyFunc", "PyFuncStateless"})
MEMORY_CHECK_TIMEOUT_SECONDS = 300
TEXT_SEED = 1234
# Lengths of the generated texts, in characters: a realistic mix and a batch of long texts.
REALISTIC_LENGTHS = (1, 150)
LONG_LENGTH = 1000


@dataclass
class CheckResult:
    """Outcome of :func:`check_saved_model`.

    :param path: the checked SavedModel folder.
    :param problems: one message per problem, each naming the fix.
    :param inputs: ``(name, BigQuery type)`` of each signature input; the type is None when it has none.
    :param outputs: ``(name, BigQuery type)`` of each signature output.
    :param total_bytes: total size of the files in the folder.
    :param batch_memory_bytes: peak working memory of one batch, or None when it was not measured.
    """

    path: str
    problems: list[str] = field(default_factory=list)
    inputs: list[tuple[str, str | None]] = field(default_factory=list)
    outputs: list[tuple[str, str | None]] = field(default_factory=list)
    total_bytes: int = 0
    batch_memory_bytes: int | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def check_saved_model(
    path: str,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_batch_memory_bytes: int = DEFAULT_MAX_BATCH_MEMORY_BYTES,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    input_name: str | None = None,
    measure_memory: bool = True,
) -> CheckResult:
    """Check a SavedModel folder against what BigQuery ML and the pipeline need.

    These are the problems it reports:

    - the folder is larger than ``max_bytes``, or it has no ``serving_default`` signature;
    - an input or output has a dtype with no BigQuery type, a shape other than ``[None]`` or
      ``[None, k]``, or is ragged or another composite tensor;
    - an input name is not a valid BigQuery column name, or there is not exactly one STRING
      input (the pipeline sends one text column);
    - the graph uses ops that TensorFlow's op registry does not know (custom ops) or ops that
      call Python.

    Working memory is measured in a fresh Python process: it loads the model, warms it up with
    one row, resets the kernel's peak-RSS counter (``/proc/self/clear_refs``), runs one batch of
    ``batch_rows`` generated strings (Korean, English, digits, punctuation and emoji), and takes
    the peak RSS (``VmHWM``) minus the RSS before the batch. It does so for a batch of 1-150
    character texts and a batch of 1,000 character texts and reports the larger figure. Where
    ``clear_refs`` is unavailable it falls back to ``ru_maxrss``, which overstates nothing but
    can miss a batch peak lower than the loading peak.

    :param path: the SavedModel folder, local or ``gs://``.
    :param max_bytes: largest allowed total size of the folder.
    :param max_batch_memory_bytes: largest allowed working memory for one batch.
    :param batch_rows: rows in the measured batch.
    :param input_name: the expected name of the string input; any valid name when None.
    :param measure_memory: run the memory check (it costs a few seconds).
    """
    for name, value in (("max_bytes", max_bytes), ("max_batch_memory_bytes", max_batch_memory_bytes), ("batch_rows", batch_rows)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")

    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    result = CheckResult(path=str(path))
    pb_path = str(path).rstrip("/") + "/saved_model.pb"
    if not tf.io.gfile.exists(pb_path):
        result.problems.append(f"{pb_path} not found: {path} is not a SavedModel folder. Export the model with keras.export.ExportArchive.")
        return result

    result.total_bytes = _folder_bytes(tf, str(path))
    if result.total_bytes > max_bytes:
        result.problems.append(
            f"The model folder holds {result.total_bytes:,} bytes, more than the {max_bytes:,} allowed "
            "for a BigQuery ML import. Shrink the vocabulary or the embedding size."
        )

    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(pb_path, "rb") as handle:
        saved_model.ParseFromString(handle.read())
    op_problems = _check_ops(saved_model)
    result.problems.extend(op_problems)

    meta_graph = next((graph for graph in saved_model.meta_graphs if "serve" in graph.meta_info_def.tags), None)
    signature = meta_graph.signature_def.get(SIGNATURE_NAME) if meta_graph is not None else None
    if signature is None:
        result.problems.append(
            f"The SavedModel has no {SIGNATURE_NAME!r} signature under the 'serve' tag; BigQuery ML reads only that one. "
            f"Export with ExportArchive.add_endpoint(name={SIGNATURE_NAME!r}, ...)."
        )
        return result

    result.inputs = [_column(name, info, "input", result.problems) for name, info in sorted(signature.inputs.items())]
    result.outputs = [_column(name, info, "output", result.problems) for name, info in sorted(signature.outputs.items())]
    _check_inputs(result, input_name)

    runnable = not op_problems and len(result.inputs) == 1 and result.inputs[0][1] == "STRING"
    if measure_memory and runnable:
        _measure_memory(result, max_batch_memory_bytes, batch_rows)
    return result


def format_result(result: CheckResult) -> str:
    """Return the printable report of a check: the signature as SQL columns, the figures and the problems.

    :param result: the result of :func:`check_saved_model`.
    """
    lines = [f"SavedModel {result.path}"]
    for kind, columns in (("input ", result.inputs), ("output", result.outputs)):
        for name, bigquery_type in columns:
            lines.append(f"  {kind} {name} {bigquery_type or '(no BigQuery type)'}")
    lines.append(f"  size {result.total_bytes:,} bytes")
    if result.batch_memory_bytes is not None:
        lines.append(f"  working memory per batch {result.batch_memory_bytes:,} bytes")
    if result.ok:
        lines.append("OK: the model can be imported into BigQuery ML.")
    else:
        lines.append(f"{len(result.problems)} problem(s):")
        lines.extend(f"  - {problem}" for problem in result.problems)
    return "\n".join(lines)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of the ``check-model`` command."""
    parser.add_argument(
        "saved_model_dir",
        metavar="DIR",
        help="SavedModel folder, local or gs://, or a model store version folder that contains saved_model/",
    )
    parser.add_argument("--input-name", default=None, help="expected name of the string input (default: any valid column name)")
    parser.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES, help="largest allowed folder size, in bytes")
    parser.add_argument(
        "--max-batch-memory-bytes", type=int, default=DEFAULT_MAX_BATCH_MEMORY_BYTES, help="largest allowed working memory of one batch, in bytes"
    )
    parser.add_argument("--batch-rows", type=int, default=DEFAULT_BATCH_ROWS, help="rows in the batch whose memory is measured")
    parser.add_argument("--skip-memory", action="store_true", help="skip the memory check, which runs the model")


def run_command(args: argparse.Namespace) -> int:
    """Run ``check-model``: print the report and return 1 when there is a problem."""
    saved_model_dir = args.saved_model_dir
    # A model store version folder contains the SavedModel in saved_model/ beside metrics.json.
    if not saved_model_dir.startswith("gs://") and (Path(saved_model_dir) / "saved_model" / "saved_model.pb").is_file():
        saved_model_dir = str(Path(saved_model_dir) / "saved_model")
    result = check_saved_model(
        saved_model_dir,
        max_bytes=args.max_bytes,
        max_batch_memory_bytes=args.max_batch_memory_bytes,
        batch_rows=args.batch_rows,
        input_name=args.input_name,
        measure_memory=not args.skip_memory,
    )
    print(format_result(result))
    return 0 if result.ok else 1


def generate_texts(rows: int, min_chars: int, max_chars: int, *, seed: int = TEXT_SEED) -> list[str]:
    """Return ``rows`` random texts of mixed Korean, English, digits, punctuation and emoji.

    :param rows: number of texts.
    :param min_chars: shortest text, in characters.
    :param max_chars: longest text, in characters.
    :param seed: random seed.
    """
    import random

    rng = random.Random(seed)
    words = ["영화", "정말", "재밌어요", "최고", "별로", "movie", "great", "bad", "the", "😀", "ㅋㅋㅋ", "!!", "10점", "..."]
    texts = []
    for _ in range(rows):
        length = rng.randint(min_chars, max_chars)
        pieces: list[str] = []
        size = 0
        while size <= length:
            # Half the pieces are random Hangul syllables, so the vocabulary misses many tokens.
            if rng.random() < 0.5:
                piece = "".join(chr(rng.randint(0xAC00, 0xD7A3)) for _ in range(rng.randint(1, 4)))
            else:
                piece = rng.choice(words)
            pieces.append(piece)
            size += len(piece) + 1
        texts.append(" ".join(pieces)[:length])
    return texts


def _folder_bytes(tf, path: str) -> int:
    total = 0
    for folder, _, files in tf.io.gfile.walk(path):
        for name in files:
            total += tf.io.gfile.stat(folder.rstrip("/") + "/" + name).length
    return total


def _check_ops(saved_model) -> list[str]:
    from tensorflow.python.framework import op_def_registry

    function_names = set()
    op_names = set()
    for graph in saved_model.meta_graphs:
        library = graph.graph_def.library
        function_names.update(function.signature.name for function in library.function)
        op_names.update(node.op for node in graph.graph_def.node)
        for function in library.function:
            op_names.update(node.op for node in function.node_def)
    op_names -= function_names

    problems = []
    python_ops = sorted(op_names & PYTHON_OPS)
    if python_ops:
        problems.append(
            f"The graph calls Python through {', '.join(python_ops)} (tf.py_function or tf.numpy_function), which BigQuery ML "
            "cannot run. Replace the Python callable with TensorFlow ops, e.g. a built-in TextVectorization standardize option."
        )
    custom_ops = sorted(name for name in op_names - PYTHON_OPS if op_def_registry.get(name) is None)
    if custom_ops:
        problems.append(
            f"The graph uses ops outside core TensorFlow: {', '.join(custom_ops)}. BigQuery ML supports only core ops; "
            "rebuild the model without the library that defines them (e.g. tensorflow_text)."
        )
    return problems


def _column(name: str, info, kind: str, problems: list[str]) -> tuple[str, str | None]:
    from tensorflow.python.framework import dtypes

    encoding = info.WhichOneof("encoding")
    if encoding != "name":
        problems.append(
            f"The {kind} {name!r} is a {encoding.replace('_', ' ')} (e.g. a RaggedTensor or SparseTensor); BigQuery ML needs dense tensors. "
            "Convert it with .to_tensor() or pad it to a fixed width before returning it."
        )
        return name, None

    dtype = dtypes.as_dtype(info.dtype)
    base_type = _bigquery_scalar_type(dtype)
    if base_type is None:
        problems.append(
            f"The {kind} {name!r} has dtype {dtype.name}, which has no BigQuery type. "
            "Cast it to tf.string, tf.bool, an integer or a float type."
        )
        return name, None

    shape = info.tensor_shape
    dims = [dim.size for dim in shape.dim]
    if shape.unknown_rank or len(dims) not in (1, 2) or (len(dims) == 2 and dims[1] < 0):
        described = "unknown" if shape.unknown_rank else str(dims)
        problems.append(
            f"The {kind} {name!r} has shape {described}; BigQuery ML takes [None] (one value per row) or [None, k] "
            "(an ARRAY per row). Reshape it in the serving function."
        )
        return name, None
    return name, base_type if len(dims) == 1 else f"ARRAY<{base_type}>"


def _bigquery_scalar_type(dtype) -> str | None:
    if dtype.name == "string":
        return "STRING"
    if dtype.is_bool:
        return "BOOL"
    if dtype.is_integer:
        return "INT64"
    if dtype.is_floating:
        return "FLOAT64"
    return None


def _check_inputs(result: CheckResult, input_name: str | None) -> None:
    for name, _ in result.inputs:
        try:
            validate_column(name, what="input name")
        except InvalidIdentifierError as error:
            result.problems.append(
                f"{error} ML.PREDICT matches inputs to columns by name, so an input must be a valid BigQuery column name. "
                "Export with a TensorSpec name such as 'text'."
            )
    if len(result.inputs) != 1:
        result.problems.append(
            f"The signature has {len(result.inputs)} inputs ({', '.join(name for name, _ in result.inputs)}); "
            "the pipeline sends one STRING column. Export a signature with a single tf.string input."
        )
        return
    name, bigquery_type = result.inputs[0]
    if bigquery_type is not None and bigquery_type != "STRING":
        result.problems.append(
            f"The input {name!r} is {bigquery_type}, but the pipeline sends text as STRING. "
            "Export with input_signature=[tf.TensorSpec([None], tf.string, name=...)]."
        )
    if input_name is not None and name != input_name:
        result.problems.append(f"The input is named {name!r}, but {input_name!r} was expected. Export with input_name={input_name!r}.")


# Runs in a fresh interpreter with the SavedModel path as argv[1]. The batches arrive as a JSON
# object on stdin because they exceed the 128 KiB that Linux allows for one command-line argument.
_MEMORY_SCRIPT = r"""
import json, resource, sys
import tensorflow as tf

def rss(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field + " not found in /proc/self/status")

def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False

batches = json.loads(sys.stdin.read())
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
input_name = list(serve.structured_input_signature[1])[0]
serve(**{input_name: tf.constant([batches["realistic"][0]])})
report = {}
for kind, texts in batches.items():
    exact = reset_peak()
    before = rss("VmRSS")
    serve(**{input_name: tf.constant(texts)})
    peak = rss("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    report[kind] = {"bytes": peak - before, "exact": exact}
print(json.dumps(report))
"""


def _measure_memory(result: CheckResult, max_batch_memory_bytes: int, batch_rows: int) -> None:
    batches = {
        "realistic": generate_texts(batch_rows, *REALISTIC_LENGTHS),
        "long": generate_texts(batch_rows, LONG_LENGTH, LONG_LENGTH, seed=TEXT_SEED + 1),
    }
    command = [sys.executable, "-c", _MEMORY_SCRIPT, result.path]
    try:
        completed = subprocess.run(
            command,
            input=json.dumps(batches),
            capture_output=True,
            text=True,
            timeout=MEMORY_CHECK_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        result.problems.append(
            f"Running {SIGNATURE_NAME} on {batch_rows} rows took longer than {MEMORY_CHECK_TIMEOUT_SECONDS} s. "
            "Make the model smaller or cap the sequence length."
        )
        return
    if completed.returncode != 0:
        result.problems.append(
            f"Running {SIGNATURE_NAME} on {batch_rows} generated rows failed: {completed.stderr.strip()[-2000:]}. "
            "Load the model with tf.saved_model.load and call the signature to see the error."
        )
        return

    report = json.loads(completed.stdout.strip().splitlines()[-1])
    log.debug("Working memory per batch of %s rows: %s", batch_rows, report)
    result.batch_memory_bytes = max(entry["bytes"] for entry in report.values())
    if result.batch_memory_bytes > max_batch_memory_bytes:
        result.problems.append(
            f"One batch of {batch_rows} rows needs {result.batch_memory_bytes:,} bytes of working memory, more than the "
            f"{max_batch_memory_bytes:,} allowed for BigQuery ML prediction. "
            "Cap the sequence length, use a smaller embedding, or avoid dense outputs over the vocabulary."
        )
