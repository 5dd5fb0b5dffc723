"""Shared parts of the benchmark scripts: the NSMC rows, the cached model and the figure lines.

The benchmarks predict the last 146,182 NSMC reviews (sorted by review_date, then review_id) with
a model trained on the labelled reviews before them. The model is trained once and cached under
``.textclf/bench/model`` (git-ignored), so later runs reuse it.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_FILE = REPO_ROOT.parent / "shared" / "data" / "nsmc" / "reviews_2003_2014.parquet"
SCRATCH_DIR = REPO_ROOT / ".textclf" / "bench"
MODEL_VERSION_DIR = SCRATCH_DIR / "model"
SAVED_MODEL_DIR = MODEL_VERSION_DIR / "saved_model"
PREDICT_ROWS = 146_182
SEED = 1234

# Each figure line starts with this marker, so run_all.py can collect the figures from a script's output.
FIGURE_MARKER = "FIGURE "


def data_available() -> bool:
    """Print the skip line and return False when the NSMC file is absent."""
    if DATA_FILE.is_file():
        return True
    print(f"skipped: ../shared/data/nsmc/{DATA_FILE.name} not found")
    return False


def sorted_reviews() -> pa.Table:
    """Return every NSMC review sorted by review_date, then review_id."""
    import pyarrow.parquet as pq

    reviews = pq.read_table(DATA_FILE, columns=["review_id", "text", "rating", "review_date"])
    return reviews.sort_by([("review_date", "ascending"), ("review_id", "ascending")])


def predict_rows(copies: int = 1) -> pa.Table:
    """Return the last 146,182 reviews, repeated ``copies`` times with new review ids after the first copy."""
    import pyarrow as pa
    import pyarrow.compute as pc

    reviews = sorted_reviews()
    rows = reviews.slice(reviews.num_rows - PREDICT_ROWS)
    if copies == 1:
        return rows
    id_step = int(pc.max(reviews.column("review_id")).as_py()) + 1
    parts = []
    for copy in range(copies):
        ids = pc.add(rows.column("review_id"), pa.scalar(copy * id_step, pa.int64()))
        parts.append(rows.set_column(0, "review_id", ids))
    return pa.concat_tables(parts).combine_chunks()


def ensure_model() -> Path:
    """Return the cached SavedModel folder, training and exporting the model first if it is missing.

    The model is trained with ``train_and_export`` on the reviews before the last 146,182, with
    ratings 1-4 as negative, 9-10 as positive and 5-8 left out.
    """
    if (SAVED_MODEL_DIR / "saved_model.pb").is_file():
        return SAVED_MODEL_DIR

    import shutil

    import pyarrow.compute as pc

    from textclf.training.train import train_and_export

    reviews = sorted_reviews()
    earlier = reviews.slice(0, reviews.num_rows - PREDICT_ROWS)
    rating = earlier.column("rating")
    labelled = earlier.filter(pc.or_(pc.less_equal(rating, 4), pc.greater_equal(rating, 9)))
    labels = pc.if_else(pc.greater_equal(labelled.column("rating"), 9), "positive", "negative")
    examples = labelled.append_column("label", labels).select(["text", "label", "review_date"])
    print(f"training the benchmark model on {examples.num_rows:,} labelled reviews (cached in {MODEL_VERSION_DIR})")

    # Train into a sibling folder and rename it, so an interrupted run leaves no half-written model.
    partial = MODEL_VERSION_DIR.with_name(MODEL_VERSION_DIR.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    metrics = train_and_export(examples, partial, date_column="review_date", seed=SEED)
    shutil.rmtree(MODEL_VERSION_DIR, ignore_errors=True)
    partial.rename(MODEL_VERSION_DIR)
    print(f"trained in {metrics['training_seconds']:.0f} s; validation balanced accuracy {metrics['balanced_accuracy']:.4f}")
    return SAVED_MODEL_DIR


def peak_rss_bytes() -> int:
    """Return this process's peak resident memory (VmHWM) in bytes."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def emit_figure(name: str, value: float, unit: str, target: str, met: bool | None, note: str = "") -> None:
    """Print one machine-readable figure line, which run_all.py collects into its table.

    :param met: whether the target is met; None for a figure printed only for information.
    """
    record = {"name": name, "value": value, "unit": unit, "target": target, "met": met, "note": note}
    print(FIGURE_MARKER + json.dumps(record, ensure_ascii=False), flush=True)


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def python_env() -> dict[str, str]:
    """Return an environment for child interpreters with ``plugins/`` importable."""
    env = dict(os.environ)
    plugins = str(REPO_ROOT / "plugins")
    env["PYTHONPATH"] = plugins + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


if __name__ == "__main__":
    # `python benchmarks/common.py` trains and caches the benchmark model.
    if data_available():
        print(ensure_model())
    sys.exit(0)
